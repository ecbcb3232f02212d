//! Replays the request-smuggling corpus (`tests/smuggling/corpus.txt`)
//! through one proxy and a lenient recording backend, and checks, for every
//! case, invariants that no client byte sequence may break:
//!
//! - every request that reaches the backend is framed alike by a lenient
//!   parser (what many real servers do: bare LF ends lines, "chunked"
//!   anywhere in Transfer-Encoding wins, chunk sizes are their leading hex
//!   digits, whitespace-only lines end trailers) and by a strict RFC 9112
//!   parser: a request the two read differently is a desync waiting for a
//!   lenient backend;
//! - nothing is left over on a backend connection after a request (the
//!   proxy sends one request at a time and waits for its response), and no
//!   forwarded body holds a request line;
//! - every response a client gets answers a request it sent, and a "victim"
//!   client on a new connection after each case gets exactly its own
//!   response (so the proxy also still serves normal requests);
//! - the proxy closes no backend connection that never received a request
//!   byte;
//! - cases with an `expect:` line get that outcome.
//!
//! All failures are collected and reported together at the end.
//! `SMUGGLING_CORPUS_ONLY=substring` runs only the cases whose name contains
//! it; `SMUGGLING_CORPUS_VERBOSE=1` prints what each case did.

mod common;
#[path = "smuggling/corpus.rs"]
mod corpus;

use common::{handshake_bytes, one_section, Proxy};
use corpus::{escape, Case, Expect};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Backend connections kept open to the proxy.
const BACKENDS: usize = 4;
/// A case is over when nothing happened (client bytes, backend bytes or
/// events) for this long...
const QUIET: Duration = Duration::from_millis(30);
/// ... (this long while nothing at all has happened yet, or while a
/// response the backend sent has not reached the client) ...
const QUIET_NOTHING_YET: Duration = Duration::from_millis(100);
const QUIET_PENDING: Duration = Duration::from_millis(200);
/// ... or this long once the proxy closed the client connection ...
const QUIET_AFTER_CLOSE: Duration = Duration::from_millis(10);
/// ... or at the latest after this.
const CASE_MAX: Duration = Duration::from_millis(1000);
/// How long the backend waits, after framing a request, for bytes the proxy
/// might have sent after it (there must be none).
const PEEK: Duration = Duration::from_millis(2);
/// How long the backend waits, with a request it cannot finish, before it
/// asks the strict parser whether the request was in fact complete.
const STUCK_AFTER: Duration = Duration::from_millis(40);
/// How long a case waits for the proxy to drop a backend connection that
/// holds part of a request once the client is gone.
const SETTLE_MAX: Duration = Duration::from_millis(300);
const VICTIM_DEADLINE: Duration = Duration::from_secs(2);
/// Case index while no case runs (warm-up).
const NO_CASE: usize = usize::MAX;

// ---------------------------------------------------------------------------
// Byte helpers
// ---------------------------------------------------------------------------

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
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
fn show(bytes: &[u8], max: usize) -> String {
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
fn pct_escape(bytes: &[u8]) -> String {
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

fn pct_unescape(s: &[u8]) -> Vec<u8> {
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

// ---------------------------------------------------------------------------
// The lenient parser: how forgiving real servers frame requests
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LenientBody {
    None,
    Length(u64),
    Chunked,
}

#[derive(Debug, Clone)]
struct LenientHead {
    method: Vec<u8>,
    target: Vec<u8>,
    len: usize,
    body: LenientBody,
}

#[derive(Debug)]
enum Lenient {
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
            "no method and target in {:?}",
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

/// Where a lenient server thinks the body that starts at `start` ends.
fn lenient_body_end(buf: &[u8], start: usize, body: LenientBody) -> Option<usize> {
    match body {
        LenientBody::None => Some(start),
        LenientBody::Length(n) => {
            let end = (start as u64).checked_add(n)?;
            (end <= buf.len() as u64).then_some(end as usize)
        }
        LenientBody::Chunked => {
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
                            return Some(pos);
                        }
                    }
                }
                let end = (pos as u64).checked_add(size)?;
                if end > buf.len() as u64 {
                    return None;
                }
                // Whatever follows the data, up to the next LF, is skipped.
                let (_, next) = lenient_line(buf, end as usize)?;
                pos = next;
            }
        }
    }
}

fn lenient(buf: &[u8]) -> Lenient {
    match lenient_head(buf) {
        Err(e) => Lenient::Error(e),
        Ok(None) => Lenient::Incomplete(None),
        Ok(Some(head)) => match lenient_body_end(buf, head.len, head.body) {
            Some(len) => Lenient::Complete { head, len },
            None => Lenient::Incomplete(Some(head)),
        },
    }
}

// ---------------------------------------------------------------------------
// The strict parser: RFC 9112 (with RFC 9110 field syntax), CRLF only
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Strict {
    Complete(usize),
    Incomplete,
    Error(String),
}

impl Strict {
    fn describe(&self) -> String {
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
        .ok_or_else(|| format!("field line without a colon: {:?}", show(line, 60)))?;
    let name = &line[..c];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(format!("bad field name {:?}", show(name, 60)));
    }
    let value = trim_ws(&line[c + 1..]);
    if let Some(&b) = value
        .iter()
        .find(|&&b| !(is_ws(b) || (0x21..=0x7e).contains(&b) || b >= 0x80))
    {
        return Err(format!(
            "byte 0x{b:02x} in the value of {:?}",
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
    let bad = |why: &str| Err(format!("bad request-target {:?}: {why}", show(t, 60)));
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

fn strict(buf: &[u8]) -> Strict {
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
        return Err(format!("bad method {:?}", show(method, 40)));
    }
    let rest = &line[sp1 + 1..];
    let sp2 = rest
        .iter()
        .position(|&b| b == b' ')
        .ok_or("request line without a second SP")?;
    let target = &rest[..sp2];
    let version = &rest[sp2 + 1..];
    if target.is_empty() || !target.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(format!("bad request-target {:?}", show(target, 60)));
    }
    target_ok(method, target)?;
    let minor = match version {
        [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit() => d - b'0',
        _ => return Err(format!("bad HTTP-version {:?}", show(version, 40))),
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
                return Err(format!("bad Host {:?}", show(value, 60)));
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
                    return Err(format!("bad transfer-coding {:?}", show(element, 40)));
                }
                codings.push(coding.to_ascii_lowercase());
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for element in value.split(|&b| b == b',') {
                let element = trim_ws(element);
                if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
                    return Err(format!("bad Content-Length {:?}", show(value, 40)));
                }
                let n: u64 = std::str::from_utf8(element)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("Content-Length {:?} overflows", show(value, 40)))?;
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
            let end = (pos as u64)
                .checked_add(n)
                .ok_or("Content-Length overflows")?;
            Ok((end <= buf.len() as u64).then_some(end as usize))
        }
        None => Ok(Some(pos)),
    }
}

/// chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
fn chunk_ext_ok(s: &[u8]) -> Result<(), String> {
    let bad = |why: &str| Err(format!("bad chunk extension {:?}: {why}", show(s, 60)));
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
            return Err(format!("bad chunk-size line {:?}", show(line, 60)));
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
// The recording backend
// ---------------------------------------------------------------------------

/// One request the lenient backend framed.
#[derive(Debug)]
struct Forwarded {
    conn: String,
    /// The request as the lenient parser framed it (head and body).
    raw: Vec<u8>,
    head_len: usize,
    target: Vec<u8>,
    /// The strict parser on the same bytes (and whatever followed them).
    strict: Strict,
    /// Bytes that were already there after the request.
    leftover: Vec<u8>,
}

#[derive(Debug)]
enum What {
    Request(Forwarded),
    /// The lenient parser wanted more bytes, none came, and the strict
    /// parser framed or refused what was there.
    Stuck {
        conn: String,
        bytes: Vec<u8>,
        strict: Strict,
    },
    /// Bytes that do not start a request at all.
    Garbage {
        conn: String,
        bytes: Vec<u8>,
        why: String,
    },
    /// The proxy closed a backend connection.
    Closed {
        conn: String,
        received: u64,
    },
}

#[derive(Debug)]
struct Event {
    case: usize,
    what: What,
}

impl What {
    /// One line, for `SMUGGLING_CORPUS_VERBOSE`.
    fn describe(&self) -> String {
        match self {
            What::Request(r) => format!(
                "conn {} request {:?}, strict parser {}, leftover {:?}",
                r.conn,
                show(&r.raw, 200),
                r.strict.describe(),
                show(&r.leftover, 80)
            ),
            What::Stuck {
                conn,
                bytes,
                strict,
            } => format!(
                "conn {conn} lenient parser stuck on {:?}, strict parser {}",
                show(bytes, 200),
                strict.describe()
            ),
            What::Garbage { conn, bytes, why } => {
                format!("conn {conn} garbage ({why}): {:?}", show(bytes, 200))
            }
            What::Closed { conn, received } => {
                format!("conn {conn} closed by the proxy after {received} bytes")
            }
        }
    }
}

struct Shared {
    stop: AtomicBool,
    case: AtomicUsize,
    /// Request bytes received on all backend connections.
    received: AtomicU64,
    /// Connections holding part of a request.
    busy: AtomicUsize,
}

struct RecordingBackend {
    shared: Arc<Shared>,
    rx: Receiver<Event>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl RecordingBackend {
    fn start(addr: SocketAddr, n: usize) -> RecordingBackend {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            case: AtomicUsize::new(NO_CASE),
            received: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let threads = (0..n)
            .map(|slot| {
                let shared = shared.clone();
                let tx = tx.clone();
                thread::spawn(move || backend_slot(addr, slot, &shared, &tx))
            })
            .collect();
        RecordingBackend {
            shared,
            rx,
            threads,
        }
    }

    /// Moves the events that arrived into `into`; how many.
    fn drain(&self, into: &mut Vec<Event>) -> usize {
        let before = into.len();
        into.extend(self.rx.try_iter());
        into.len() - before
    }

    fn stop(self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn backend_slot(addr: SocketAddr, slot: usize, shared: &Shared, tx: &Sender<Event>) {
    let id = format!("corpus{slot:06}");
    let mut generation = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
        if s.write_all(&handshake_bytes(&id, "")).is_err() {
            continue;
        }
        generation += 1;
        serve(&mut s, &format!("{slot}.{generation}"), shared, tx);
        thread::sleep(Duration::from_millis(5));
    }
}

fn send(shared: &Shared, tx: &Sender<Event>, what: What) {
    let _ = tx.send(Event {
        case: shared.case.load(Ordering::SeqCst),
        what,
    });
}

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

/// Serves one backend connection until the proxy closes it (or the test
/// stops): frames requests leniently, records each, answers each.
fn serve(s: &mut TcpStream, conn: &str, shared: &Shared, tx: &Sender<Event>) {
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
                    let _ = s.set_read_timeout(Some(PEEK));
                    match s.read(&mut scratch) {
                        Ok(0) => eof = true,
                        Ok(n) => got(&mut buf, n, &scratch, &mut received),
                        Err(_) => {}
                    }
                    let _ = s.set_read_timeout(Some(tick));
                    let request = Forwarded {
                        conn: conn.to_string(),
                        raw: buf[..len].to_vec(),
                        head_len: head.len,
                        target: head.target.clone(),
                        strict: strict(&buf),
                        leftover: buf[len..].to_vec(),
                    };
                    send(shared, tx, What::Request(request));
                    buf.drain(..len);
                    if respond(s, &head.method, &head.target).is_err() {
                        eof = true;
                    }
                }
                Lenient::Incomplete(_) => break,
                Lenient::Error(why) => {
                    send(
                        shared,
                        tx,
                        What::Garbage {
                            conn: conn.to_string(),
                            bytes: std::mem::take(&mut buf),
                            why,
                        },
                    );
                    let _ = s.write_all(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    break 'conn;
                }
            }
        }
        // Empty lines between requests are no request yet.
        set_busy(&mut busy, buf.iter().any(|&b| b != b'\r' && b != b'\n'));
        if eof {
            send(
                shared,
                tx,
                What::Closed {
                    conn: conn.to_string(),
                    received,
                },
            );
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
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                if !buf.is_empty() && last_rx.elapsed() >= STUCK_AFTER {
                    let st = strict(&buf);
                    if st != Strict::Incomplete {
                        let target = match lenient(&buf) {
                            Lenient::Incomplete(Some(h)) => (h.method, h.target),
                            _ => (b"GET".to_vec(), b"-".to_vec()),
                        };
                        send(
                            shared,
                            tx,
                            What::Stuck {
                                conn: conn.to_string(),
                                bytes: std::mem::take(&mut buf),
                                strict: st,
                            },
                        );
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
struct Resp {
    status: u16,
    /// X-Target (unescaped): the response came from the backend.
    target: Option<Vec<u8>>,
    body: Vec<u8>,
}

/// Responses in `buf`, and the bytes after the last complete one.
fn parse_responses(buf: &[u8]) -> (Vec<Resp>, &[u8]) {
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

/// What the client of one case saw.
struct Outcome {
    received: Vec<u8>,
    closed: bool,
    /// Request bytes that reached backends while the case ran.
    backend_bytes: u64,
    /// A backend connection still held part of a request after the client
    /// had gone and `SETTLE_MAX` had passed.
    still_busy: bool,
    victim: Result<(), String>,
    took: Duration,
}

fn run_case(
    addr: SocketAddr,
    be: &RecordingBackend,
    events: &mut Vec<Event>,
    i: usize,
    case: &Case,
) -> Outcome {
    let started = Instant::now();
    let shared = &be.shared;
    shared.case.store(i, Ordering::SeqCst);
    let busy_before = shared.busy.load(Ordering::SeqCst);
    let b0 = shared.received.load(Ordering::SeqCst);
    let first_event = events.len();
    let mut received = Vec::new();
    let mut closed = false;
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(mut s) => {
            let _ = s.set_nodelay(true);
            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
            // The proxy may refuse and close before it read everything.
            let _ = s.write_all(&case.bytes);
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
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock
                                    | io::ErrorKind::TimedOut
                                    | io::ErrorKind::Interrupted
                            ) => {}
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
                // Requests the backend answered whose response the client
                // has not got yet: give them time to arrive.
                let answered = events[first_event..]
                    .iter()
                    .filter(|e| {
                        e.case == i && matches!(&e.what, What::Request(_) | What::Stuck { .. })
                    })
                    .count();
                let got = parse_responses(&received)
                    .0
                    .iter()
                    .filter(|r| r.target.is_some())
                    .count();
                let nothing_yet = received.is_empty() && !closed && last_b == b0;
                let need = if answered > got {
                    QUIET_PENDING
                } else if nothing_yet {
                    QUIET_NOTHING_YET
                } else {
                    QUIET
                };
                let quiet = last_activity.elapsed();
                if (closed && quiet >= QUIET_AFTER_CLOSE)
                    || quiet >= need
                    || started.elapsed() >= CASE_MAX
                {
                    break;
                }
            }
        }
        Err(e) => {
            return Outcome {
                received,
                closed: true,
                backend_bytes: 0,
                still_busy: false,
                victim: Err(format!("could not even connect for the case: {e}")),
                took: started.elapsed(),
            };
        }
    }
    // The client is gone: a backend connection holding part of its request
    // should be dropped by the proxy.
    let settle = Instant::now();
    while shared.busy.load(Ordering::SeqCst) > busy_before && settle.elapsed() < SETTLE_MAX {
        be.drain(events);
        thread::sleep(Duration::from_millis(2));
    }
    let still_busy = shared.busy.load(Ordering::SeqCst) > busy_before;
    be.drain(events);
    let backend_bytes = shared.received.load(Ordering::SeqCst) - b0;
    let victim = victim(addr, i);
    be.drain(events);
    Outcome {
        received,
        closed,
        backend_bytes,
        still_busy,
        victim,
        took: started.elapsed(),
    }
}

fn victim_target(i: usize) -> String {
    format!("/victim-{i}")
}

/// A normal request on a new connection: it must get exactly its own
/// response.
fn victim(addr: SocketAddr, i: usize) -> Result<(), String> {
    let target = victim_target(i);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    s.write_all(format!("GET {target} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let deadline = Instant::now() + VICTIM_DEADLINE;
    let mut got = Vec::new();
    let mut scratch = [0u8; 4096];
    loop {
        let (resps, _) = parse_responses(&got);
        if !resps.is_empty() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "no complete response within {VICTIM_DEADLINE:?}; got {:?}",
                show(&got, 200)
            ));
        }
        let _ = s.set_read_timeout(Some((deadline - now).min(Duration::from_millis(50))));
        match s.read(&mut scratch) {
            Ok(0) => return Err(format!("connection closed; got {:?}", show(&got, 200))),
            Ok(n) => got.extend_from_slice(&scratch[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(format!("read: {e}; got {:?}", show(&got, 200))),
        }
    }
    let (resps, rest) = parse_responses(&got);
    let r = &resps[0];
    let want_body = format!("target={target}");
    if r.status != 200
        || r.target.as_deref() != Some(target.as_bytes())
        || r.body != want_body.as_bytes()
        || resps.len() != 1
        || !rest.is_empty()
    {
        return Err(format!(
            "wanted exactly `200` with body {want_body:?}, got {:?}",
            show(&got, 300)
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Judging a case
// ---------------------------------------------------------------------------

/// `^[A-Z]+ \S+ HTTP/` on some line of `body`.
fn request_line_in(body: &[u8]) -> Option<&[u8]> {
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
/// origin form the proxy makes of an absolute-form target
/// (`http://host?q` becomes `/?q`, `http://host` becomes `/`).
fn sent_target(bytes: &[u8], target: &[u8]) -> bool {
    if find(bytes, target).is_some() {
        return true;
    }
    let absolute = find(&bytes.to_ascii_lowercase(), b"://").is_some();
    absolute
        && (target == b"/" || (target.starts_with(b"/?") && find(bytes, &target[1..]).is_some()))
}

fn judge(i: usize, case: &Case, o: &Outcome, events: &[&Event]) -> Vec<String> {
    let mut problems = Vec::new();
    let victim = victim_target(i);
    let is_victim = |t: &[u8]| t == victim.as_bytes();

    let mut forwarded: Vec<&Forwarded> = Vec::new();
    let mut stuck = 0;
    for e in events {
        match &e.what {
            What::Request(r) => {
                if !is_victim(&r.target) {
                    forwarded.push(r);
                }
                match &r.strict {
                    Strict::Complete(n) if *n == r.raw.len() => {}
                    Strict::Error(why) => problems.push(format!(
                        "forwarded a request that a strict RFC 9112 parser rejects ({why}) \
                         (backend connection {}, the lenient parser framed {} bytes): {:?}",
                        r.conn,
                        r.raw.len(),
                        show(&r.raw, 300)
                    )),
                    other => problems.push(format!(
                        "desync on backend connection {}: the lenient backend framed {} bytes, \
                         the strict parser {}: {:?}",
                        r.conn,
                        r.raw.len(),
                        other.describe(),
                        show(&r.raw, 300)
                    )),
                }
                if !r.leftover.is_empty() {
                    problems.push(format!(
                        "bytes left over on backend connection {} after a request, before its \
                         response: {:?} (after {:?})",
                        r.conn,
                        show(&r.leftover, 200),
                        show(&r.raw, 200)
                    ));
                }
                if let Some(line) = request_line_in(&r.raw[r.head_len..]) {
                    problems.push(format!(
                        "a forwarded request's body holds a request line {:?}: {:?}",
                        show(line, 80),
                        show(&r.raw, 300)
                    ));
                }
            }
            What::Stuck {
                conn,
                bytes,
                strict,
            } => {
                stuck += 1;
                problems.push(format!(
                    "desync on backend connection {conn}: the strict parser {} but the lenient \
                     backend waits for more bytes: {:?}",
                    strict.describe(),
                    show(bytes, 300)
                ));
            }
            What::Garbage { conn, bytes, why } => problems.push(format!(
                "backend connection {conn} received bytes that are not a request ({why}): {:?}",
                show(bytes, 200)
            )),
            What::Closed { conn, received } => {
                if *received == 0 {
                    problems.push(format!(
                        "the proxy closed backend connection {conn}, which had received no \
                         request byte"
                    ));
                }
            }
        }
    }

    let (resps, rest) = parse_responses(&o.received);
    for r in &resps {
        if let Some(t) = &r.target {
            if t == victim.as_bytes() || !sent_target(&case.bytes, t) {
                problems.push(format!(
                    "the client got the response to {:?}, a request it never sent",
                    show(t, 80)
                ));
            }
        }
    }
    if !rest.is_empty() && !rest.starts_with(b"HTTP/") {
        problems.push(format!(
            "the client got bytes that are not a response: {:?}",
            show(rest, 200)
        ));
    }
    if o.still_busy {
        problems.push(format!(
            "a backend connection still held part of a request {SETTLE_MAX:?} after the client \
             had gone"
        ));
    }
    if let Err(e) = &o.victim {
        problems.push(format!(
            "the next client ({victim}, on a new connection): {e}"
        ));
    }

    let first = resps.first();
    let summary = || match first {
        None if o.closed => "the connection closed without a response".to_string(),
        None => format!(
            "no response and the connection stayed open (got {:?})",
            show(&o.received, 100)
        ),
        Some(r) => match &r.target {
            Some(t) => format!("the backend's response to {:?}", show(t, 60)),
            None => format!("{} from the proxy ({:?})", r.status, show(&r.body, 80)),
        },
    };
    match case.expect {
        Some(Expect::Refused(status)) => {
            let ok_status = first.is_some_and(|r| {
                r.target.is_none() && r.status >= 400 && status.is_none_or(|s| s == r.status)
            });
            let want = status.map_or("a 4xx/5xx".to_string(), |s| s.to_string());
            if !ok_status {
                problems.push(format!("expected {want} from the proxy; got {}", summary()));
            }
            for r in &forwarded {
                problems.push(format!(
                    "expected refused, but the backend received {:?}",
                    show(&r.raw, 200)
                ));
            }
            // (`backend_bytes` was read before the victim ran.)
            if forwarded.is_empty() && stuck == 0 && o.backend_bytes > 0 {
                problems.push(format!(
                    "expected refused, but {} bytes of it reached a backend",
                    o.backend_bytes
                ));
            }
        }
        Some(Expect::Forwarded) => {
            let answered = resps
                .iter()
                .any(|r| r.target.as_deref().is_some_and(|t| !is_victim(t)));
            if forwarded.is_empty() || !answered {
                problems.push(format!(
                    "expected it forwarded and answered by the backend; got {}",
                    summary()
                ));
            }
        }
        None => {}
    }
    for want in &case.backend_sees {
        if !forwarded.iter().any(|r| find(&r.raw, want).is_some()) {
            let saw: Vec<String> = forwarded.iter().map(|r| show(&r.raw, 120)).collect();
            problems.push(format!(
                "no forwarded request contains {:?}; the backend saw {saw:?}",
                escape(want)
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

fn warm_up(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if victim(addr, NO_CASE).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never served a request through the recording backend"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn smuggling_corpus() {
    let all = corpus::load();
    let only = std::env::var("SMUGGLING_CORPUS_ONLY").ok();
    let verbose = std::env::var_os("SMUGGLING_CORPUS_VERBOSE").is_some();
    if only.is_none() {
        assert!(all.len() >= 400, "only {} cases in the corpus", all.len());
    }
    let cases: Vec<&Case> = all
        .iter()
        .filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    assert!(!cases.is_empty(), "no case matches {only:?}");

    let mut proxy = Proxy::start(&one_section("", ""));
    let addr = proxy.client_addr();
    let be = RecordingBackend::start(proxy.backend_addr(0), BACKENDS);
    warm_up(addr);
    let mut events = Vec::new();
    be.drain(&mut events);
    events.clear();

    let started = Instant::now();
    let mut outcomes = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let o = run_case(addr, &be, &mut events, i, case);
        if verbose {
            eprintln!(
                "{:>4} {:<50} {:>4} ms, client got {:?}",
                i,
                case.name,
                o.took.as_millis(),
                show(&o.received, 120)
            );
        }
        outcomes.push(o);
    }
    thread::sleep(QUIET);
    be.drain(&mut events);
    let elapsed = started.elapsed();
    proxy.assert_alive();
    be.stop();
    if verbose {
        eprintln!("---- proxy stderr ----\n{}", proxy.stderr_text());
    }

    let mut failures = Vec::new();
    for (i, (case, o)) in cases.iter().zip(&outcomes).enumerate() {
        let mine: Vec<&Event> = events.iter().filter(|e| e.case == i).collect();
        if verbose {
            for e in &mine {
                eprintln!("{:>4} {:<50} backend: {}", i, case.name, e.what.describe());
            }
        }
        let problems = judge(i, case, o, &mine);
        if !problems.is_empty() {
            failures.push(format!(
                "{} [{}]\n    {}",
                case.name,
                case.source,
                problems.join("\n    ")
            ));
        }
    }
    eprintln!(
        "smuggling corpus: {} cases in {:.1} s, {} failing",
        cases.len(),
        elapsed.as_secs_f64(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n\n{}\n",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The harness's own parsers, on inputs whose framing is known, so that a
/// clean corpus run means something.
#[test]
fn harness_parsers_frame_known_inputs() {
    let lenient_len = |b: &[u8]| match lenient(b) {
        Lenient::Complete { len, .. } => Some(len),
        _ => None,
    };
    let simple = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT";
    assert_eq!(strict(simple), Strict::Complete(simple.len() - 4));
    assert_eq!(lenient_len(simple), Some(simple.len() - 4));

    let chunked: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        5 ;foo=\"b\\\"r\"\r\nhello\r\n0000000000000000\r\nX-T: 1\r\n\r\n";
    assert_eq!(strict(chunked), Strict::Complete(chunked.len()));
    assert_eq!(lenient_len(chunked), Some(chunked.len()));
    assert_eq!(strict(&chunked[..chunked.len() - 1]), Strict::Incomplete);

    // Trailer smuggling: the lenient server stops at the bare-LF line.
    let trailer: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /s HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(matches!(strict(trailer), Strict::Error(_)));
    assert_eq!(
        lenient_len(trailer),
        Some(find(trailer, b"GET /s").unwrap())
    );
    let ws: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n \r\nX";
    assert!(matches!(strict(ws), Strict::Error(_)));
    assert_eq!(lenient_len(ws), Some(ws.len() - 1));

    // CL.TE: strict refuses; lenient takes "chunked" anywhere over CL.
    let clte: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\nG";
    assert!(matches!(strict(clte), Strict::Error(_)));
    assert_eq!(lenient_len(clte), Some(clte.len() - 1));

    // Lenient: bare LF heads, first Content-Length, hex prefix of sizes.
    let lf: &[u8] = b"POST / HTTP/1.1\nHost: a\nContent-Length: 2\nContent-Length: 9\n\nhiX";
    assert!(matches!(strict(lf), Strict::Error(_)));
    assert_eq!(lenient_len(lf), Some(lf.len() - 1));
    let hex: &[u8] =
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n\r\n";
    assert!(matches!(strict(hex), Strict::Error(_)));
    // `0x5` is size 0 to it: `hello` is a trailer line.
    assert_eq!(lenient_len(hex), Some(hex.len()));

    // Strict grammar corners.
    let ok = |s: &[u8]| matches!(strict(s), Strict::Complete(_));
    assert!(ok(b"GET /a HTTP/1.2\r\nHost: a\r\n\r\n"));
    assert!(ok(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(ok(b"GET http://a/b?c HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(ok(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 1\r\n\r\nx"
    ));
    assert!(ok(b"\r\nGET / HTTP/1.0\r\n\r\n"));
    assert!(!ok(b"GET ! HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!ok(b"GET /a#f HTTP/1.1\r\nHost: a\r\n\r\n"));
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n"));
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nX : 1\r\n\r\n"));
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n b\r\n\r\n"));
    assert!(!ok(b"GET / HTTP/1.1\r\nHost: a\rX: 1\r\n\r\n"));
    assert!(!ok(b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"));
    assert!(!ok(b"GET / HTTP/1.1\r\n\r\n"));
    let chunk = |body: &str| {
        let mut b = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        b.extend_from_slice(body.as_bytes());
        ok(&b)
    };
    assert!(chunk("5;a=b;c\r\nhello\r\n0\r\n\r\n"));
    assert!(!chunk("5;\0\r\nhello\r\n0\r\n\r\n"));
    assert!(!chunk("5 \r\nhello\r\n0\r\n\r\n"));
    assert!(!chunk("5\r\nhelloXX0\r\n\r\n"));
    assert!(!chunk("10000000000000000\r\nhello\r\n0\r\n\r\n"));
    assert!(!chunk("0\r\nnot a field\r\n\r\n"));

    // The client side.
    let two = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Target: /a%20b\r\n\r\ntarget=/aHTTP/1.1 4";
    let (resps, rest) = parse_responses(two);
    assert_eq!(resps.len(), 2);
    assert_eq!(resps[1].target.as_deref(), Some(&b"/a b"[..]));
    assert_eq!(rest, b"HTTP/1.1 4");
    assert!(sent_target(b"GET http://h?q HTTP/1.1", b"/?q"));
    assert!(!sent_target(b"GET /x HTTP/1.1", b"/y"));
    assert!(request_line_in(b"abc\r\nGET /x HTTP/1.1\r\n").is_some());
    assert!(request_line_in(b"GET /x\r\n").is_none());
    assert_eq!(
        pct_unescape(pct_escape(b"/a%\0\xff").as_bytes()),
        b"/a%\0\xff"
    );
}
