//! The harness that `tests/smuggling_corpus.rs` and
//! `benches/smuggling_diff.rs` share for replaying the request-smuggling
//! corpus through a proxy: a lenient and a strict (RFC 9112) request parser,
//! a recording backend that frames every request it receives with both
//! (dialing in to Swiftiply, or listening behind another proxy), and the
//! client side of a case (send its bytes, read until quiet, parse the
//! responses). A plain module with no tests:
//!
//! ```ignore
//! #[path = "smuggling/corpus.rs"]
//! mod corpus;
//! #[path = "smuggling/harness.rs"]
//! mod harness;
//! ```
//!
//! It uses `crate::corpus::escape`, so the crate must include `corpus.rs`
//! as `mod corpus` at its root. Standard library only.

#![allow(dead_code)]

use crate::corpus::escape;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Case index while no case runs (warm-up).
pub const NO_CASE: usize = usize::MAX;

/// How long the harness waits for things; the test and the bench each pick
/// theirs (the bench runs two proxies at once, so it waits longer).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A case is over when nothing happened (client bytes, backend bytes or
    /// events) for this long...
    pub quiet: Duration,
    /// ... (this long while nothing at all has happened yet, or while a
    /// response the backend sent has not reached the client) ...
    pub quiet_nothing_yet: Duration,
    pub quiet_pending: Duration,
    /// ... or this long once the proxy closed the client connection ...
    pub quiet_after_close: Duration,
    /// ... or at the latest after this.
    pub case_max: Duration,
    /// How long the backend waits, after framing a request, for bytes the
    /// proxy might have sent after it (there must be none).
    pub peek: Duration,
    /// How long the backend waits, with a request it cannot finish, before
    /// it asks the strict parser whether the request was in fact complete.
    pub stuck_after: Duration,
    /// How long a case waits, once the client is gone, for backend
    /// connections to drop a partial request (and, for a listening backend,
    /// to close).
    pub settle_max: Duration,
}

// ---------------------------------------------------------------------------
// Byte helpers
// ---------------------------------------------------------------------------

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ws(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ws(*last) {
            break;
        }
        s = rest;
    }
    s
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// At most `max` characters of `escape(bytes)`.
pub fn show(bytes: &[u8], max: usize) -> String {
    let s = escape(bytes);
    if s.chars().count() > max {
        let cut: String = s.chars().take(max).collect();
        format!("{cut}… ({} bytes)", bytes.len())
    } else {
        s
    }
}

/// The target as the backend reports it: `%HH` for `%` and any byte that is
/// not visible ASCII.
pub fn pct_escape(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if (0x21..=0x7e).contains(&b) && b != b'%' {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

pub fn pct_unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            if let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// A read that timed out (or was interrupted): nothing to read yet.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

// ---------------------------------------------------------------------------
// The lenient parser: how forgiving real servers frame requests (bare LF
// ends lines, "chunked" anywhere in Transfer-Encoding wins, chunk sizes are
// their leading hex digits, whitespace-only lines end trailers)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LenientBody {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone)]
pub struct LenientHead {
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    /// The head's length, up to the body.
    pub len: usize,
    pub body: LenientBody,
}

#[derive(Debug)]
pub enum Lenient {
    Complete {
        head: LenientHead,
        len: usize,
    },
    /// More bytes needed; the head, if it is complete.
    Incomplete(Option<LenientHead>),
    Error(String),
}

/// The line at `pos` (LF ends it, a CR before the LF is dropped) and where
/// the next one starts; None if no LF yet.
fn lenient_line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let i = pos + buf.get(pos..)?.iter().position(|&b| b == b'\n')?;
    let line = &buf[pos..i];
    Some((line.strip_suffix(b"\r").unwrap_or(line), i + 1))
}

fn lenient_head(buf: &[u8]) -> Result<Option<LenientHead>, String> {
    let mut pos = 0;
    let request_line = loop {
        let Some((line, next)) = lenient_line(buf, pos) else {
            return Ok(None);
        };
        pos = next;
        if !line.is_empty() {
            break line;
        }
    };
    let mut words = request_line.split(|&b| is_ws(b)).filter(|w| !w.is_empty());
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err(format!(
            "no method and target in \"{}\"",
            show(request_line, 80)
        ));
    };
    let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let Some((line, next)) = lenient_line(buf, pos) else {
            return Ok(None);
        };
        pos = next;
        if line.is_empty() {
            break;
        }
        if is_ws(line[0]) {
            if let Some((_, v)) = headers.last_mut() {
                v.push(b' ');
                v.extend_from_slice(trim_ws(line));
                continue;
            }
        }
        if let Some(c) = line.iter().position(|&b| b == b':') {
            headers.push((
                trim_ws(&line[..c]).to_ascii_lowercase(),
                trim_ws(&line[c + 1..]).to_vec(),
            ));
        }
    }
    let chunked = headers.iter().any(|(n, v)| {
        n == b"transfer-encoding" && find(&v.to_ascii_lowercase(), b"chunked").is_some()
    });
    let body = if chunked {
        LenientBody::Chunked
    } else {
        match headers.iter().find(|(n, _)| n == b"content-length") {
            Some((_, v)) => {
                let v = v.strip_prefix(b"+").unwrap_or(v);
                let n = v
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .fold(0u64, |n, &d| {
                        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                    });
                if n == 0 {
                    LenientBody::None
                } else {
                    LenientBody::Length(n)
                }
            }
            None => LenientBody::None,
        }
    };
    Ok(Some(LenientHead {
        method: method.to_vec(),
        target: target.to_vec(),
        len: pos,
        body,
    }))
}

/// Where a lenient server thinks the body that starts at `start` ends, and
/// the body's data (chunked: decoded).
pub fn lenient_body(buf: &[u8], start: usize, body: LenientBody) -> Option<(usize, Vec<u8>)> {
    match body {
        LenientBody::None => Some((start, Vec::new())),
        LenientBody::Length(n) => {
            let end = (start as u64).checked_add(n)?;
            (end <= buf.len() as u64).then(|| (end as usize, buf[start..end as usize].to_vec()))
        }
        LenientBody::Chunked => {
            let mut data = Vec::new();
            let mut pos = start;
            loop {
                let (line, next) = lenient_line(buf, pos)?;
                pos = next;
                let size = trim_ws(line)
                    .iter()
                    .map_while(|&b| (b as char).to_digit(16))
                    .fold(0u64, |n, d| n.saturating_mul(16).saturating_add(d.into()));
                if size == 0 {
                    loop {
                        let (line, next) = lenient_line(buf, pos)?;
                        pos = next;
                        if line.iter().all(|&b| is_ws(b)) {
                            return Some((pos, data));
                        }
                    }
                }
                let end = (pos as u64).checked_add(size)?;
                if end > buf.len() as u64 {
                    return None;
                }
                data.extend_from_slice(&buf[pos..end as usize]);
                // Whatever follows the data, up to the next LF, is skipped.
                let (_, next) = lenient_line(buf, end as usize)?;
                pos = next;
            }
        }
    }
}

pub fn lenient(buf: &[u8]) -> Lenient {
    match lenient_head(buf) {
        Err(e) => Lenient::Error(e),
        Ok(None) => Lenient::Incomplete(None),
        Ok(Some(head)) => match lenient_body(buf, head.len, head.body) {
            Some((len, _)) => Lenient::Complete { head, len },
            None => Lenient::Incomplete(Some(head)),
        },
    }
}

// ---------------------------------------------------------------------------
// The strict parser: RFC 9112 (with RFC 9110 field syntax), CRLF only
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strict {
    Complete(usize),
    Incomplete,
    Error(String),
}

impl Strict {
    pub fn describe(&self) -> String {
        match self {
            Strict::Complete(n) => format!("framed {n} bytes"),
            Strict::Incomplete => "wants more bytes".to_string(),
            Strict::Error(e) => format!("rejects it ({e})"),
        }
    }
}

/// The CRLF-terminated line at `pos`: (end of its content, start of the
/// next line). Ok(None): no line end yet. A bare CR or LF is an error.
fn crlf_line(buf: &[u8], pos: usize) -> Result<Option<(usize, usize)>, String> {
    let mut i = pos;
    while i < buf.len() {
        match buf[i] {
            b'\r' => {
                return match buf.get(i + 1) {
                    None => Ok(None),
                    Some(b'\n') => Ok(Some((i, i + 2))),
                    Some(_) => Err(format!("bare CR at byte {i}")),
                }
            }
            b'\n' => return Err(format!("bare LF at byte {i}")),
            _ => i += 1,
        }
    }
    Ok(None)
}

/// A field line (header or trailer): `token ":" OWS value OWS`, value bytes
/// VCHAR / obs-text / SP / HTAB. Returns (name, trimmed value).
fn field_line(line: &[u8]) -> Result<(&[u8], &[u8]), String> {
    if line.first().is_some_and(|&b| is_ws(b)) {
        return Err("obs-fold (a line starting with whitespace)".into());
    }
    let c = line
        .iter()
        .position(|&b| b == b':')
        .ok_or_else(|| format!("field line without a colon: \"{}\"", show(line, 60)))?;
    let name = &line[..c];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(format!("bad field name \"{}\"", show(name, 60)));
    }
    let value = trim_ws(&line[c + 1..]);
    if let Some(&b) = value
        .iter()
        .find(|&&b| !(is_ws(b) || (0x21..=0x7e).contains(&b) || b >= 0x80))
    {
        return Err(format!(
            "byte 0x{b:02x} in the value of \"{}\"",
            show(name, 40)
        ));
    }
    Ok((name, value))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

fn is_sub_delim(b: u8) -> bool {
    b"!$&'()*+,;=".contains(&b)
}

/// Bytes of a URI made of pchar / "/" / "?" (plus `extra`), with `%HH`
/// escapes well formed.
fn uri_chars_ok(s: &[u8], extra: &[u8]) -> bool {
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%' {
            if !(s.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return false;
            }
            i += 3;
            continue;
        }
        if !(is_unreserved(b) || is_sub_delim(b) || b":@/?".contains(&b) || extra.contains(&b)) {
            return false;
        }
        i += 1;
    }
    true
}

fn host_ok(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        match v.iter().position(|&b| b == b']') {
            Some(i) => {
                let inner = &v[1..i];
                if inner.is_empty()
                    || !inner
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b":.".contains(&b))
                {
                    return false;
                }
                (&v[..=i], &v[i + 1..])
            }
            None => return false,
        }
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &v[v.len()..]),
        }
    };
    let port_ok = port.is_empty() || (port[0] == b':' && port[1..].iter().all(u8::is_ascii_digit));
    let host_ok = host.first() == Some(&b'[')
        || (uri_chars_ok(host, b"") && !host.iter().any(|b| b":@/?".contains(b)));
    port_ok && host_ok
}

fn target_ok(method: &[u8], t: &[u8]) -> Result<(), String> {
    let bad = |why: &str| Err(format!("bad request-target \"{}\": {why}", show(t, 60)));
    if t == b"*" {
        return if method == b"OPTIONS" {
            Ok(())
        } else {
            bad("asterisk-form is for OPTIONS only")
        };
    }
    if t.starts_with(b"/") {
        return if uri_chars_ok(t, b"") {
            Ok(())
        } else {
            bad("not an origin-form")
        };
    }
    if let Some(i) = find(t, b"://") {
        let scheme = &t[..i];
        let scheme_ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
            && scheme
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        return if scheme_ok && uri_chars_ok(&t[i + 3..], b"[]") {
            Ok(())
        } else {
            bad("not an absolute-form")
        };
    }
    if method == b"CONNECT" && host_ok(t) {
        return Ok(());
    }
    bad("no request-target form matches")
}

pub fn strict(buf: &[u8]) -> Strict {
    match strict_inner(buf) {
        Ok(Some(n)) => Strict::Complete(n),
        Ok(None) => Strict::Incomplete,
        Err(e) => Strict::Error(e),
    }
}

macro_rules! line_or_wait {
    ($buf:expr, $pos:expr) => {
        match crlf_line($buf, $pos)? {
            Some(l) => l,
            None => return Ok(None),
        }
    };
}

fn strict_inner(buf: &[u8]) -> Result<Option<usize>, String> {
    // Empty lines before the request line are allowed (RFC 9112 §2.2).
    let mut pos = 0;
    let (end, next) = loop {
        let (end, next) = line_or_wait!(buf, pos);
        if end > pos {
            break (end, next);
        }
        pos = next;
    };
    let line = &buf[pos..end];
    pos = next;

    // request-line = method SP request-target SP HTTP-version
    let sp1 = line
        .iter()
        .position(|&b| b == b' ')
        .ok_or("request line without SP")?;
    let method = &line[..sp1];
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(format!("bad method \"{}\"", show(method, 40)));
    }
    let rest = &line[sp1 + 1..];
    let sp2 = rest
        .iter()
        .position(|&b| b == b' ')
        .ok_or("request line without a second SP")?;
    let target = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(format!("bad request-target \"{}\"", show(target, 60)));
    }
    target_ok(method, target)?;
    let minor = match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit() => d - b'0',
        _ => return Err(format!("bad HTTP-version \"{}\"", show(version, 40))),
    };

    // field lines
    let mut hosts = 0;
    let mut codings: Vec<Vec<u8>> = Vec::new();
    let mut te_seen = false;
    let mut length: Option<u64> = None;
    loop {
        let (end, next) = line_or_wait!(buf, pos);
        let line = &buf[pos..end];
        pos = next;
        if line.is_empty() {
            break;
        }
        let (name, value) = field_line(line)?;
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if !value.is_empty() && !host_ok(value) {
                return Err(format!("bad Host \"{}\"", show(value, 60)));
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_seen = true;
            for element in value.split(|&b| b == b',') {
                let element = trim_ws(element);
                if element.is_empty() {
                    continue; // empty list elements are ignored (RFC 9110 §5.6.1)
                }
                let coding = trim_ws(element.split(|&b| b == b';').next().unwrap_or(b""));
                if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
                    return Err(format!("bad transfer-coding \"{}\"", show(element, 40)));
                }
                codings.push(coding.to_ascii_lowercase());
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for element in value.split(|&b| b == b',') {
                let element = trim_ws(element);
                if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
                    return Err(format!("bad Content-Length \"{}\"", show(value, 40)));
                }
                let n: u64 = std::str::from_utf8(element)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("Content-Length \"{}\" overflows", show(value, 40)))?;
                if length.is_some_and(|l| l != n) {
                    return Err("Content-Length values differ".into());
                }
                length = Some(n);
            }
        }
    }
    if hosts > 1 || (minor >= 1 && hosts == 0) {
        return Err(format!("{hosts} Host fields in an HTTP/1.{minor} request"));
    }

    // message body length (RFC 9112 §6.3)
    if te_seen {
        if minor == 0 {
            return Err("Transfer-Encoding in an HTTP/1.0 request".into());
        }
        if length.is_some() {
            return Err("both Transfer-Encoding and Content-Length".into());
        }
        let chunked_at: Vec<usize> = (0..codings.len())
            .filter(|&i| codings[i] == b"chunked")
            .collect();
        if chunked_at.len() != 1 || chunked_at[0] + 1 != codings.len() {
            return Err("chunked is not the final coding, exactly once".into());
        }
        return strict_chunked(buf, pos);
    }
    match length {
        Some(n) => {
            // A length whose end overflows 64 bits is valid grammar: such a
            // body is only incomplete, as for the lenient parser.
            let end = (pos as u64).saturating_add(n);
            Ok((end <= buf.len() as u64).then_some(end as usize))
        }
        None => Ok(Some(pos)),
    }
}

/// chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
fn chunk_ext_ok(s: &[u8]) -> Result<(), String> {
    let bad = |why: &str| Err(format!("bad chunk extension \"{}\": {why}", show(s, 60)));
    let skip_ws = |mut i: usize| {
        while i < s.len() && is_ws(s[i]) {
            i += 1;
        }
        i
    };
    let token_end = |mut i: usize| {
        while i < s.len() && is_tchar(s[i]) {
            i += 1;
        }
        i
    };
    let mut i = 0;
    loop {
        let before = i;
        i = skip_ws(i);
        if i == s.len() {
            return if i == before {
                Ok(())
            } else {
                bad("whitespace not followed by `;`")
            };
        }
        if s[i] != b';' {
            return bad("expected `;`");
        }
        i = skip_ws(i + 1);
        let name_end = token_end(i);
        if name_end == i {
            return bad("empty or invalid name");
        }
        i = name_end;
        let j = skip_ws(i);
        if j < s.len() && s[j] == b'=' {
            i = skip_ws(j + 1);
            if s.get(i) == Some(&b'"') {
                i += 1;
                loop {
                    match s.get(i) {
                        None => return bad("unterminated quoted-string"),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => match s.get(i + 1) {
                            Some(&c) if is_ws(c) || (0x21..=0x7e).contains(&c) || c >= 0x80 => {
                                i += 2
                            }
                            _ => return bad("bad quoted-pair"),
                        },
                        Some(&c) if is_ws(c) || (0x21..=0x7e).contains(&c) || c >= 0x80 => i += 1,
                        Some(_) => return bad("control byte in quoted-string"),
                    }
                }
            } else {
                let value_end = token_end(i);
                if value_end == i {
                    return bad("empty or invalid value");
                }
                i = value_end;
            }
        }
    }
}

fn strict_chunked(buf: &[u8], mut pos: usize) -> Result<Option<usize>, String> {
    loop {
        let (end, next) = line_or_wait!(buf, pos);
        let line = &buf[pos..end];
        let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
        if digits == 0 {
            return Err(format!("bad chunk-size line \"{}\"", show(line, 60)));
        }
        let mut size: u64 = 0;
        for &d in &line[..digits] {
            let d = u64::from((d as char).to_digit(16).unwrap_or(0));
            size = size
                .checked_mul(16)
                .and_then(|s| s.checked_add(d))
                .ok_or("chunk size overflows 64 bits")?;
        }
        chunk_ext_ok(&line[digits..])?;
        pos = next;
        if size == 0 {
            loop {
                let (end, next) = line_or_wait!(buf, pos);
                if end == pos {
                    return Ok(Some(next));
                }
                field_line(&buf[pos..end]).map_err(|e| format!("trailer: {e}"))?;
                pos = next;
            }
        }
        let data_end = (pos as u64)
            .checked_add(size)
            .ok_or("chunk size overflows")?;
        if data_end > buf.len() as u64 {
            return Ok(None);
        }
        let data_end = data_end as usize;
        match &buf[data_end..buf.len().min(data_end + 2)] {
            b"\r\n" => pos = data_end + 2,
            b"" | b"\r" => return Ok(None),
            _ => return Err("chunk data not followed by CRLF".into()),
        }
    }
}

// ---------------------------------------------------------------------------
// The recording backend: dialing in to Swiftiply, or listening behind
// another proxy
// ---------------------------------------------------------------------------

/// One request the lenient backend framed.
#[derive(Debug)]
pub struct Forwarded {
    pub conn: String,
    /// The request as the lenient parser framed it (head and body).
    pub raw: Vec<u8>,
    pub head_len: usize,
    pub method: Vec<u8>,
    pub target: Vec<u8>,
    /// The body's data as the lenient parser read it (chunked: decoded).
    pub body: Vec<u8>,
    /// The strict parser on the same bytes (and whatever followed them).
    pub strict: Strict,
    /// Bytes that were already there after the request.
    pub leftover: Vec<u8>,
}

#[derive(Debug)]
pub enum What {
    Request(Forwarded),
    /// The lenient parser wanted more bytes, none came (or the connection
    /// closed), and the strict parser framed or refused what was there.
    Stuck {
        conn: String,
        bytes: Vec<u8>,
        strict: Strict,
    },
    /// The connection closed on part of a request that both parsers wait to
    /// complete (the client went away mid-request).
    Partial {
        conn: String,
        bytes: Vec<u8>,
    },
    /// Bytes that do not start a request at all.
    Garbage {
        conn: String,
        bytes: Vec<u8>,
        why: String,
    },
    /// The proxy closed a dialed-in backend connection.
    Closed {
        conn: String,
        received: u64,
    },
}

impl What {
    /// One line, for a verbose or per-case report.
    pub fn describe(&self) -> String {
        match self {
            What::Request(r) => {
                let agrees = match &r.strict {
                    Strict::Complete(n) if *n == r.raw.len() => "agrees".to_string(),
                    other => format!("DISAGREES: {}", other.describe()),
                };
                let mut s = format!(
                    "conn {} request \"{}\"; strict parser {agrees}",
                    r.conn,
                    show(&r.raw, 400)
                );
                if !r.leftover.is_empty() {
                    s.push_str(&format!("; LEFTOVER \"{}\"", show(&r.leftover, 120)));
                }
                s
            }
            What::Stuck {
                conn,
                bytes,
                strict,
            } => format!(
                "conn {conn} lenient parser STUCK on \"{}\", strict parser {}",
                show(bytes, 300),
                strict.describe()
            ),
            What::Partial { conn, bytes } => format!(
                "conn {conn} closed on a partial request (both parsers want more): \"{}\"",
                show(bytes, 300)
            ),
            What::Garbage { conn, bytes, why } => {
                format!("conn {conn} GARBAGE ({why}): \"{}\"", show(bytes, 300))
            }
            What::Closed { conn, received } => {
                format!("conn {conn} closed by the proxy after {received} bytes")
            }
        }
    }
}

#[derive(Debug)]
pub struct Event {
    /// The case it belongs to (`NO_CASE` while none runs).
    pub case: usize,
    pub what: What,
}

pub struct Shared {
    pub stop: AtomicBool,
    pub case: AtomicUsize,
    /// Request bytes received on all backend connections.
    pub received: AtomicU64,
    /// Connections holding part of a request.
    pub busy: AtomicUsize,
    /// Open accepted connections (listening mode).
    pub open: AtomicUsize,
    pub timing: Timing,
}

pub struct RecordingBackend {
    pub shared: Arc<Shared>,
    rx: Mutex<Receiver<Event>>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Listening mode: a case is over once its connections are closed.
    listening: bool,
}

impl RecordingBackend {
    fn new_shared(timing: Timing) -> Arc<Shared> {
        Arc::new(Shared {
            stop: AtomicBool::new(false),
            case: AtomicUsize::new(NO_CASE),
            received: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            timing,
        })
    }

    /// `n` connections dialing in to Swiftiply's backend address, each
    /// reconnecting when the proxy closes it.
    pub fn dial_in(addr: SocketAddr, n: usize, timing: Timing) -> RecordingBackend {
        let shared = Self::new_shared(timing);
        let (tx, rx) = mpsc::channel();
        let threads = (0..n)
            .map(|slot| {
                let shared = shared.clone();
                let tx = tx.clone();
                thread::spawn(move || dial_slot(addr, slot, &shared, &tx))
            })
            .collect();
        RecordingBackend {
            shared,
            rx: Mutex::new(rx),
            threads,
            listening: false,
        }
    }

    /// A plain server on `listener`: every connection it accepts belongs to
    /// the case that runs when it is accepted.
    pub fn listen(listener: TcpListener, timing: Timing) -> io::Result<RecordingBackend> {
        listener.set_nonblocking(true)?;
        let shared = Self::new_shared(timing);
        let (tx, rx) = mpsc::channel();
        let accept_shared = shared.clone();
        let thread = thread::spawn(move || accept_loop(&listener, &accept_shared, &tx));
        Ok(RecordingBackend {
            shared,
            rx: Mutex::new(rx),
            threads: vec![thread],
            listening: true,
        })
    }

    /// Moves the events that arrived into `into`; how many.
    pub fn drain(&self, into: &mut Vec<Event>) -> usize {
        let before = into.len();
        into.extend(self.rx.lock().unwrap_or_else(|p| p.into_inner()).try_iter());
        into.len() - before
    }

    /// Stops and joins its threads (also done when it is dropped).
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for RecordingBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn dial_slot(addr: SocketAddr, slot: usize, shared: &Shared, tx: &Sender<Event>) {
    let id = format!("corpus{slot:06}");
    let mut generation = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        // swiftclient + 12-character id + key length (2 hex digits) + key.
        if s.write_all(format!("swiftclient{id}00").as_bytes())
            .is_err()
        {
            continue;
        }
        generation += 1;
        serve(&mut s, &format!("{slot}.{generation}"), shared, tx, None);
        thread::sleep(Duration::from_millis(5));
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>, tx: &Sender<Event>) {
    let mut n = 0;
    let mut conns = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut s, _)) => {
                n += 1;
                let case = shared.case.load(Ordering::SeqCst);
                let shared = shared.clone();
                let tx = tx.clone();
                shared.open.fetch_add(1, Ordering::SeqCst);
                conns.push(thread::spawn(move || {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_nodelay(true);
                    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                    serve(&mut s, &format!("{n}"), &shared, &tx, Some(case));
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                }));
                conns.retain(|t| !t.is_finished());
            }
            Err(e) if is_timeout(&e) => thread::sleep(Duration::from_millis(2)),
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
    for t in conns {
        let _ = t.join();
    }
}

/// The backend's answer: 200, `X-Target` (percent-escaped) and, but for
/// HEAD, a body `target=<the same>`.
fn respond(s: &mut TcpStream, method: &[u8], target: &[u8]) -> io::Result<()> {
    let t = pct_escape(target);
    let body = if method == b"HEAD" {
        String::new()
    } else {
        format!("target={t}")
    };
    let out = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Target: {t}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(out.as_bytes())
}

/// Serves one backend connection until the proxy closes it (or the run
/// stops): frames requests leniently, records each, answers each. Events
/// belong to `fixed_case` (listening), or to the case running when they
/// happen (dialing in; then the connection's close is an event too).
fn serve(
    s: &mut TcpStream,
    conn: &str,
    shared: &Shared,
    tx: &Sender<Event>,
    fixed_case: Option<usize>,
) {
    let send = |what: What| {
        let _ = tx.send(Event {
            case: fixed_case.unwrap_or_else(|| shared.case.load(Ordering::SeqCst)),
            what,
        });
    };
    let tick = Duration::from_millis(10);
    let _ = s.set_read_timeout(Some(tick));
    let mut buf: Vec<u8> = Vec::new();
    let mut received: u64 = 0;
    let mut last_rx = Instant::now();
    let mut busy = false;
    let mut scratch = vec![0u8; 65536];
    let mut eof = false;
    let set_busy = |busy: &mut bool, now: bool| {
        if *busy != now {
            if now {
                shared.busy.fetch_add(1, Ordering::SeqCst);
            } else {
                shared.busy.fetch_sub(1, Ordering::SeqCst);
            }
            *busy = now;
        }
    };
    let got = |buf: &mut Vec<u8>, n: usize, scratch: &[u8], received: &mut u64| {
        buf.extend_from_slice(&scratch[..n]);
        *received += n as u64;
        shared.received.fetch_add(n as u64, Ordering::SeqCst);
    };
    'conn: loop {
        // Answer every request the lenient parser can frame.
        while !buf.is_empty() {
            match lenient(&buf) {
                Lenient::Complete { head, len } => {
                    // Anything the proxy sent after the request?
                    let _ = s.set_read_timeout(Some(shared.timing.peek));
                    match s.read(&mut scratch) {
                        Ok(0) => eof = true,
                        Ok(n) => got(&mut buf, n, &scratch, &mut received),
                        Err(_) => {}
                    }
                    let _ = s.set_read_timeout(Some(tick));
                    let body = lenient_body(&buf, head.len, head.body)
                        .map(|(_, data)| data)
                        .unwrap_or_default();
                    let request = Forwarded {
                        conn: conn.to_string(),
                        raw: buf[..len].to_vec(),
                        head_len: head.len,
                        method: head.method.clone(),
                        target: head.target.clone(),
                        body,
                        strict: strict(&buf),
                        leftover: buf[len..].to_vec(),
                    };
                    send(What::Request(request));
                    buf.drain(..len);
                    if respond(s, &head.method, &head.target).is_err() {
                        eof = true;
                    }
                }
                Lenient::Incomplete(_) => break,
                Lenient::Error(why) => {
                    send(What::Garbage {
                        conn: conn.to_string(),
                        bytes: std::mem::take(&mut buf),
                        why,
                    });
                    let _ = s.write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    break 'conn;
                }
            }
        }
        // Empty lines between requests are no request yet.
        let pending = buf.iter().any(|&b| b != b'\r' && b != b'\n');
        set_busy(&mut busy, pending);
        if eof {
            if pending {
                let st = strict(&buf);
                let bytes = std::mem::take(&mut buf);
                let conn = conn.to_string();
                send(if st == Strict::Incomplete {
                    What::Partial { conn, bytes }
                } else {
                    What::Stuck {
                        conn,
                        bytes,
                        strict: st,
                    }
                });
            }
            if fixed_case.is_none() {
                send(What::Closed {
                    conn: conn.to_string(),
                    received,
                });
            }
            break;
        }
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match s.read(&mut scratch) {
            Ok(0) => eof = true,
            Ok(n) => {
                got(&mut buf, n, &scratch, &mut received);
                last_rx = Instant::now();
            }
            Err(e) if is_timeout(&e) => {
                if !buf.is_empty() && last_rx.elapsed() >= shared.timing.stuck_after {
                    let st = strict(&buf);
                    if st != Strict::Incomplete {
                        let target = match lenient(&buf) {
                            Lenient::Incomplete(Some(h)) => (h.method, h.target),
                            _ => (b"GET".to_vec(), b"-".to_vec()),
                        };
                        send(What::Stuck {
                            conn: conn.to_string(),
                            bytes: std::mem::take(&mut buf),
                            strict: st,
                        });
                        if respond(s, &target.0, &target.1).is_err() {
                            eof = true;
                        }
                    }
                }
            }
            Err(_) => eof = true,
        }
    }
    set_busy(&mut busy, false);
}

// ---------------------------------------------------------------------------
// The client side
// ---------------------------------------------------------------------------

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    /// X-Target (unescaped): the response came from the backend.
    pub target: Option<Vec<u8>>,
    pub body: Vec<u8>,
}

/// Responses in `buf`, and the bytes after the last complete one.
pub fn parse_responses(buf: &[u8]) -> (Vec<Resp>, &[u8]) {
    let mut out = Vec::new();
    let mut rest = buf;
    loop {
        if rest.is_empty() || !rest.starts_with(b"HTTP/1.") {
            return (out, rest);
        }
        let Some(h) = find(rest, b"\r\n\r\n") else {
            return (out, rest);
        };
        let head = &rest[..h];
        let status = head
            .get(9..12)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u16>().ok());
        let Some(status) = status else {
            return (out, rest);
        };
        let mut length = None;
        let mut target = None;
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if let Some(c) = line.iter().position(|&b| b == b':') {
                let (n, v) = (&line[..c], trim_ws(&line[c + 1..]));
                if n.eq_ignore_ascii_case(b"content-length") {
                    length = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
                } else if n.eq_ignore_ascii_case(b"x-target") {
                    target = Some(pct_unescape(v));
                }
            }
        }
        let body_len: usize = if (100..200).contains(&status) || status == 204 || status == 304 {
            0
        } else {
            length.unwrap_or(rest.len() - h - 4)
        };
        if rest.len() < h + 4 + body_len {
            return (out, rest);
        }
        out.push(Resp {
            status,
            target,
            body: rest[h + 4..h + 4 + body_len].to_vec(),
        });
        rest = &rest[h + 4 + body_len..];
    }
}

/// `^[A-Z]+ \S+ HTTP/` on some line of `body`.
pub fn request_line_in(body: &[u8]) -> Option<&[u8]> {
    body.split(|&b| b == b'\n').find(|line| {
        let m = line.iter().take_while(|b| b.is_ascii_uppercase()).count();
        if m == 0 || line.get(m) != Some(&b' ') {
            return false;
        }
        let rest = &line[m + 1..];
        let t = rest.iter().take_while(|b| !b.is_ascii_whitespace()).count();
        t > 0 && rest[t..].starts_with(b" HTTP/")
    })
}

/// Whether `bytes` hold a request for `target`: as written, or as the
/// origin form a proxy makes of an absolute-form target
/// (`http://host?q` becomes `/?q`, `http://host` becomes `/`).
pub fn sent_target(bytes: &[u8], target: &[u8]) -> bool {
    if find(bytes, target).is_some() {
        return true;
    }
    let absolute = find(&bytes.to_ascii_lowercase(), b"://").is_some();
    absolute
        && (target == b"/" || (target.starts_with(b"/?") && find(bytes, &target[1..]).is_some()))
}

/// What the client of one case saw.
#[derive(Debug, Default)]
pub struct Exchange {
    pub received: Vec<u8>,
    pub closed: bool,
    /// Request bytes that reached the backend while the case ran (until the
    /// backend settled).
    pub backend_bytes: u64,
    /// A backend connection still held part of a request (or, listening,
    /// a connection of the case was still open) `settle_max` after the
    /// client had gone.
    pub still_busy: bool,
    pub took: Duration,
}

/// Case `i`: sends `bytes` on a new connection to `addr` and reads until
/// nothing happens for a while (client bytes, backend bytes, `be`'s events,
/// which go to `events`); then closes the connection and waits for the
/// backend to settle. Err: it could not connect.
pub fn play_case(
    addr: SocketAddr,
    be: &RecordingBackend,
    events: &mut Vec<Event>,
    i: usize,
    bytes: &[u8],
) -> io::Result<Exchange> {
    let started = Instant::now();
    let shared = &be.shared;
    let timing = shared.timing;
    shared.case.store(i, Ordering::SeqCst);
    let busy_before = shared.busy.load(Ordering::SeqCst);
    let b0 = shared.received.load(Ordering::SeqCst);
    let first_event = events.len();
    let mut received = Vec::new();
    let mut closed = false;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    let _ = s.set_nodelay(true);
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    // The proxy may refuse and close before it read everything.
    let _ = s.write_all(bytes);
    let _ = s.set_read_timeout(Some(Duration::from_millis(3)));
    let mut last_activity = Instant::now();
    let mut last_b = b0;
    let mut scratch = [0u8; 16384];
    loop {
        if !closed {
            match s.read(&mut scratch) {
                Ok(0) => {
                    closed = true;
                    last_activity = Instant::now();
                }
                Ok(n) => {
                    received.extend_from_slice(&scratch[..n]);
                    last_activity = Instant::now();
                }
                Err(e) if is_timeout(&e) => {}
                Err(_) => {
                    closed = true;
                    last_activity = Instant::now();
                }
            }
        } else {
            thread::sleep(Duration::from_millis(2));
        }
        if be.drain(events) > 0 {
            last_activity = Instant::now();
        }
        let b = shared.received.load(Ordering::SeqCst);
        if b != last_b {
            last_b = b;
            last_activity = Instant::now();
        }
        // Requests the backend answered whose response the client has not
        // got yet: give them time to arrive.
        let answered = events[first_event..]
            .iter()
            .filter(|e| e.case == i && matches!(&e.what, What::Request(_) | What::Stuck { .. }))
            .count();
        let got = parse_responses(&received)
            .0
            .iter()
            .filter(|r| r.target.is_some())
            .count();
        let nothing_yet = received.is_empty() && !closed && last_b == b0;
        let need = if answered > got {
            timing.quiet_pending
        } else if nothing_yet {
            timing.quiet_nothing_yet
        } else {
            timing.quiet
        };
        let quiet = last_activity.elapsed();
        if (closed && quiet >= timing.quiet_after_close)
            || quiet >= need
            || started.elapsed() >= timing.case_max
        {
            break;
        }
    }
    drop(s);
    // The client is gone: a backend connection holding part of its request
    // should be dropped, and a listening backend's every connection of the
    // case.
    let settle = Instant::now();
    let settled = |shared: &Shared| {
        shared.busy.load(Ordering::SeqCst) <= busy_before
            && (!be.listening || shared.open.load(Ordering::SeqCst) == 0)
    };
    while !settled(shared) && settle.elapsed() < timing.settle_max {
        be.drain(events);
        thread::sleep(Duration::from_millis(2));
    }
    let still_busy = !settled(shared);
    thread::sleep(Duration::from_millis(2));
    be.drain(events);
    let backend_bytes = shared.received.load(Ordering::SeqCst) - b0;
    Ok(Exchange {
        received,
        closed,
        backend_bytes,
        still_busy,
        took: started.elapsed(),
    })
}
