//! A differential run of the request-smuggling corpus
//! (`tests/smuggling/corpus.txt`) against HAProxy, by hand:
//!
//! ```text
//! cargo bench --bench smuggling_diff -- --run
//! ```
//!
//! Every case is sent, on a fresh client connection, to Swiftiply (a
//! recording backend dialing in) and to HAProxy (`mode http`, in front of a
//! plain listening recording backend). Both backends frame what they
//! receive with a lenient parser (what forgiving servers do) and a strict
//! RFC 9112 one, as `tests/smuggling_corpus.rs` does (its parsers are copied
//! here: a bench cannot use a test file's items). For each case and proxy
//! the run records whether the proxy refused (its own status, nothing
//! reached the backend), what requests the backend framed, and any desync
//! (the two parsers disagree, bytes left over after a request, a request
//! line inside a body); then it prints a summary of where the two proxies
//! agree and where not, and writes every case's details to `--out`.
//!
//! Without `--run` (as `cargo test --all-targets` runs it) it only prints
//! its usage. Loopback only; every socket has a timeout, the run stops
//! itself (`--max-secs`), and both proxies are killed when it ends, panics
//! included.

#[path = "../tests/smuggling/corpus.rs"]
mod corpus;

use corpus::{escape, Case, Expect};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: cargo bench --bench smuggling_diff -- --run [OPTIONS]

Replays every case of tests/smuggling/corpus.txt through Swiftiply and through
HAProxy, each in front of a backend that frames what it receives with a
lenient and a strict (RFC 9112) parser, and compares what each proxy refused,
what it forwarded and how its backend framed it.

  --run             run it (without it, this text is printed and nothing runs)
  --out PATH        the full per-case results (default target/smuggling-diff.txt)
  --only SUBSTRING  only the cases whose name contains it
  --swiftiply PATH  a prebuilt proxy (default: `cargo build --release --bin
                    swiftiply` is run first, then target/release/swiftiply)
  --haproxy PATH    default /usr/sbin/haproxy, else `haproxy` on the PATH
  --serial          one proxy at a time (default: both at once)
  --max-secs N      stop sending cases after N seconds (default 900)";

/// Backend connections dialing in to Swiftiply.
const BACKENDS: usize = 4;
/// A case is over when nothing happened (client bytes, backend bytes or
/// events) for this long...
const QUIET: Duration = Duration::from_millis(40);
/// ... (this long while nothing at all has happened yet, or while a
/// response the backend sent has not reached the client) ...
const QUIET_NOTHING_YET: Duration = Duration::from_millis(150);
const QUIET_PENDING: Duration = Duration::from_millis(300);
/// ... or this long once the proxy closed the client connection ...
const QUIET_AFTER_CLOSE: Duration = Duration::from_millis(15);
/// ... or at the latest after this.
const CASE_MAX: Duration = Duration::from_millis(1500);
/// How long the backend waits, after framing a request, for bytes the proxy
/// might have sent after it (there must be none).
const PEEK: Duration = Duration::from_millis(3);
/// How long the backend waits, with a request it cannot finish, before it
/// asks the strict parser whether the request was in fact complete.
const STUCK_AFTER: Duration = Duration::from_millis(60);
/// How long a case waits, once the client is gone, for backend connections
/// to drop a partial request (and, behind HAProxy, to close).
const SETTLE_MAX: Duration = Duration::from_millis(500);
/// Case index while no case runs (warm-up).
const NO_CASE: usize = usize::MAX;

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

struct Options {
    out: Option<PathBuf>,
    only: Option<String>,
    swiftiply: Option<PathBuf>,
    haproxy: Option<PathBuf>,
    serial: bool,
    max_secs: u64,
}

/// `Ok(None)`: nothing to run (usage printed).
fn parse_args(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut run = false;
    let mut o = Options {
        out: None,
        only: None,
        swiftiply: None,
        haproxy: None,
        serial: false,
        max_secs: 900,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            // `cargo bench` adds it.
            "--bench" => {}
            "--run" => run = true,
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--only" => o.only = Some(value()?),
            "--swiftiply" => o.swiftiply = Some(PathBuf::from(value()?)),
            "--haproxy" => o.haproxy = Some(PathBuf::from(value()?)),
            "--serial" => o.serial = true,
            "--max-secs" => {
                let v = value()?;
                o.max_secs = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--max-secs: {v:?} is not a positive number"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !run {
        println!("smuggling_diff: nothing run.\n\n{USAGE}");
        return Ok(None);
    }
    Ok(Some(o))
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(e) => {
            eprintln!("smuggling_diff: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("smuggling_diff: {e}");
        std::process::exit(1);
    }
}

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

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

// ---------------------------------------------------------------------------
// The lenient parser (as in tests/smuggling_corpus.rs)
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
fn lenient_body(buf: &[u8], start: usize, body: LenientBody) -> Option<(usize, Vec<u8>)> {
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

fn lenient(buf: &[u8]) -> Lenient {
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
// The strict parser: RFC 9112 (with RFC 9110 field syntax), CRLF only (as in
// tests/smuggling_corpus.rs)
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
            // (The test's copy refuses a length whose end overflows 64 bits;
            // it is valid grammar, so here such a body is only incomplete,
            // as for the lenient parser.)
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
// The recording backend: dialing in to Swiftiply, or listening for HAProxy
// ---------------------------------------------------------------------------

/// One request the lenient backend framed.
#[derive(Debug)]
struct Forwarded {
    conn: String,
    /// The request as the lenient parser framed it (head and body).
    raw: Vec<u8>,
    head_len: usize,
    method: Vec<u8>,
    target: Vec<u8>,
    /// The body's data as the lenient parser read it (chunked: decoded).
    body: Vec<u8>,
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
    fn describe(&self) -> String {
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
struct Event {
    case: usize,
    what: What,
}

struct Shared {
    stop: AtomicBool,
    case: AtomicUsize,
    /// Request bytes received on all backend connections.
    received: AtomicU64,
    /// Connections holding part of a request.
    busy: AtomicUsize,
    /// Open accepted connections (listening mode).
    open: AtomicUsize,
}

struct RecordingBackend {
    shared: Arc<Shared>,
    rx: Mutex<Receiver<Event>>,
    threads: Vec<thread::JoinHandle<()>>,
    /// Listening mode: a case is over once its connections are closed.
    listening: bool,
}

impl RecordingBackend {
    fn new_shared() -> Arc<Shared> {
        Arc::new(Shared {
            stop: AtomicBool::new(false),
            case: AtomicUsize::new(NO_CASE),
            received: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        })
    }

    /// `n` connections dialing in to Swiftiply's backend address, each
    /// reconnecting when the proxy closes it.
    fn dial_in(addr: SocketAddr, n: usize) -> RecordingBackend {
        let shared = Self::new_shared();
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
    fn listen(listener: TcpListener) -> io::Result<RecordingBackend> {
        listener.set_nonblocking(true)?;
        let shared = Self::new_shared();
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
    fn drain(&self, into: &mut Vec<Event>) -> usize {
        let before = into.len();
        into.extend(self.rx.lock().unwrap_or_else(|p| p.into_inner()).try_iter());
        into.len() - before
    }

    fn stop(&mut self) {
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
    let id = format!("sdiff{slot:07}");
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
/// belong to `fixed_case`, or to the case running when they happen.
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
                    let _ = s.set_read_timeout(Some(PEEK));
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
                if !buf.is_empty() && last_rx.elapsed() >= STUCK_AFTER {
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
struct Resp {
    status: u16,
    /// X-Target (unescaped): the response came from the backend.
    target: Option<Vec<u8>>,
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
        out.push(Resp { status, target });
        rest = &rest[h + 4 + body_len..];
    }
}

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
/// origin form a proxy makes of an absolute-form target.
fn sent_target(bytes: &[u8], target: &[u8]) -> bool {
    if find(bytes, target).is_some() {
        return true;
    }
    let absolute = find(&bytes.to_ascii_lowercase(), b"://").is_some();
    absolute
        && (target == b"/" || (target.starts_with(b"/?") && find(bytes, &target[1..]).is_some()))
}

/// The origin form of a target (`http://h/p?q` → `/p?q`, `http://h` → `/`),
/// so that the two proxies' forwarding can be compared.
fn origin_form(t: &[u8]) -> Vec<u8> {
    match find(t, b"://") {
        Some(i) if !t.starts_with(b"/") => {
            let rest = &t[i + 3..];
            match rest.iter().position(|&b| b == b'/' || b == b'?') {
                Some(j) if rest[j] == b'/' => rest[j..].to_vec(),
                Some(j) => [b"/", &rest[j..]].concat(),
                None => b"/".to_vec(),
            }
        }
        _ => t.to_vec(),
    }
}

/// What the client of one case saw, against one proxy.
struct ClientSide {
    received: Vec<u8>,
    closed: bool,
    /// Request bytes that reached the backend while the case ran.
    backend_bytes: u64,
    took: Duration,
    error: Option<String>,
}

fn run_case(
    addr: SocketAddr,
    be: &RecordingBackend,
    events: &mut Vec<Event>,
    i: usize,
    case: &Case,
) -> ClientSide {
    let started = Instant::now();
    let shared = &be.shared;
    shared.case.store(i, Ordering::SeqCst);
    let busy_before = shared.busy.load(Ordering::SeqCst);
    let b0 = shared.received.load(Ordering::SeqCst);
    let first_event = events.len();
    let mut received = Vec::new();
    let mut closed = false;
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => {
            return ClientSide {
                received,
                closed: true,
                backend_bytes: 0,
                took: started.elapsed(),
                error: Some(format!("cannot connect: {e}")),
            }
        }
    };
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
            QUIET_PENDING
        } else if nothing_yet {
            QUIET_NOTHING_YET
        } else {
            QUIET
        };
        let quiet = last_activity.elapsed();
        if (closed && quiet >= QUIET_AFTER_CLOSE) || quiet >= need || started.elapsed() >= CASE_MAX
        {
            break;
        }
    }
    drop(s);
    // The client is gone: a backend connection holding part of its request
    // should be dropped, and behind HAProxy every connection of the case.
    let settle = Instant::now();
    let settled = |shared: &Shared| {
        shared.busy.load(Ordering::SeqCst) <= busy_before
            && (!be.listening || shared.open.load(Ordering::SeqCst) == 0)
    };
    while !settled(shared) && settle.elapsed() < SETTLE_MAX {
        be.drain(events);
        thread::sleep(Duration::from_millis(2));
    }
    thread::sleep(Duration::from_millis(2));
    be.drain(events);
    let backend_bytes = shared.received.load(Ordering::SeqCst) - b0;
    ClientSide {
        received,
        closed,
        backend_bytes,
        took: started.elapsed(),
        error: None,
    }
}

// ---------------------------------------------------------------------------
// Judging one proxy's handling of one case
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The proxy answered this (4xx/5xx) itself; nothing reached the backend.
    Refused(u16),
    /// The proxy answered this non-error status itself; nothing reached the
    /// backend.
    Answered(u16),
    /// No response, nothing reached the backend.
    Dropped(&'static str),
    /// No response and the connection still open: the proxy waits for the
    /// rest of an incomplete request (the backend got `.0` bytes of it).
    Waiting(u64),
    /// A request (or, before a refusal, part of one) reached the backend.
    Forwarded,
    /// Not run (deadline, or the proxy could not be reached).
    Skipped(String),
}

impl Verdict {
    fn label(&self) -> String {
        match self {
            Verdict::Refused(s) => format!("refused {s}"),
            Verdict::Answered(s) => format!("answered {s} itself"),
            Verdict::Dropped(why) => format!("dropped ({why})"),
            Verdict::Waiting(0) => "waits for the rest, nothing forwarded".to_string(),
            Verdict::Waiting(n) => format!("waits for the rest, {n} bytes forwarded"),
            Verdict::Forwarded => "forwarded".to_string(),
            Verdict::Skipped(why) => format!("skipped ({why})"),
        }
    }
}

struct Judged {
    verdict: Verdict,
    /// One line per thing the backend framed (method, origin-form target,
    /// body data), for comparing the two proxies.
    framed: Vec<String>,
    /// Framing disagreements (must be none).
    desyncs: Vec<String>,
    /// Requests the lenient parser framed like the strict one would, but
    /// that the strict parser rejects (a grammar violation passed on).
    strict_rejects: Vec<String>,
    /// The client's responses, in one line.
    responses: String,
}

fn judge(case: &Case, cs: &ClientSide, events: &[&Event]) -> Judged {
    let mut framed = Vec::new();
    let mut desyncs = Vec::new();
    let mut strict_rejects = Vec::new();
    let mut reached = cs.backend_bytes > 0;
    // Something the backend framed (not just part of a request).
    let mut complete = false;
    for e in events {
        match &e.what {
            What::Request(r) => {
                reached = true;
                complete = true;
                framed.push(format!(
                    "{} {} body=\"{}\"",
                    show(&r.method, 20),
                    show(&origin_form(&r.target), 60),
                    show(&r.body, 40)
                ));
                match &r.strict {
                    Strict::Complete(n) if *n == r.raw.len() => {}
                    Strict::Error(why) => strict_rejects
                        .push(format!("strict parser rejects a forwarded request ({why})")),
                    other => desyncs.push(format!(
                        "lenient framed {} bytes, strict {}",
                        r.raw.len(),
                        other.describe()
                    )),
                }
                if !r.leftover.is_empty() {
                    desyncs.push(format!(
                        "bytes left over after a request: \"{}\"",
                        show(&r.leftover, 80)
                    ));
                }
                if let Some(line) = request_line_in(&r.raw[r.head_len..]) {
                    desyncs.push(format!(
                        "a forwarded body holds a request line \"{}\"",
                        show(line, 60)
                    ));
                }
            }
            What::Stuck { bytes, strict, .. } => {
                reached = true;
                complete = true;
                framed.push(format!("STUCK({} bytes)", bytes.len()));
                let why = format!(
                    "lenient parser waits for more bytes, strict {}",
                    strict.describe()
                );
                match strict {
                    // Not a framing the two disagree on, but a request a
                    // strict server would refuse.
                    Strict::Error(_) => strict_rejects.push(why),
                    _ => desyncs.push(why),
                }
            }
            What::Partial { bytes, .. } => {
                reached = true;
                framed.push(format!("PARTIAL({} bytes)", bytes.len()));
            }
            What::Garbage { why, .. } => {
                reached = true;
                complete = true;
                framed.push("GARBAGE".to_string());
                desyncs.push(format!(
                    "the backend got bytes that are not a request ({why})"
                ));
            }
            What::Closed { .. } => {}
        }
    }
    let (resps, rest) = parse_responses(&cs.received);
    for r in &resps {
        if let Some(t) = &r.target {
            if !sent_target(&case.bytes, t) {
                desyncs.push(format!(
                    "the client got the response to \"{}\", a request it never sent",
                    show(t, 60)
                ));
            }
        }
    }
    let mut responses: Vec<String> = resps
        .iter()
        .map(|r| match &r.target {
            Some(t) => format!("{} from the backend for \"{}\"", r.status, show(t, 60)),
            None => format!("{} from the proxy", r.status),
        })
        .collect();
    if !rest.is_empty() {
        responses.push(format!("then \"{}\"", show(rest, 80)));
    }
    responses.push(if cs.closed {
        "closed".to_string()
    } else {
        "left open".to_string()
    });
    let first_final = resps.iter().find(|r| r.status >= 200);
    let verdict = if let Some(e) = &cs.error {
        Verdict::Skipped(e.clone())
    } else if !complete && first_final.is_none() && !cs.closed && rest.is_empty() {
        Verdict::Waiting(cs.backend_bytes)
    } else if reached {
        Verdict::Forwarded
    } else {
        match first_final {
            Some(r) if r.status >= 400 => Verdict::Refused(r.status),
            Some(r) => Verdict::Answered(r.status),
            None if !rest.is_empty() => Verdict::Dropped("answered with non-HTTP/1 bytes"),
            None if cs.closed => Verdict::Dropped("closed, no response"),
            None => Verdict::Dropped("no response, left open"),
        }
    };
    Judged {
        verdict,
        framed,
        desyncs,
        strict_rejects,
        responses: responses.join(", "),
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A child process, killed when dropped; its stdout and stderr collected.
struct Proc {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command) -> Result<Proc, String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        let output = Arc::new(Mutex::new(String::new()));
        let pipes: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().expect("piped stdout")),
            Box::new(child.stderr.take().expect("piped stderr")),
        ];
        for mut pipe in pipes {
            let output = output.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
                    // Bounded: keep the start (the listening lines).
                    if out.len() < 1 << 20 {
                        out.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        Ok(Proc {
            name,
            child,
            output,
        })
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Err with the exit status and output if it exited.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); output:\n{}",
                self.name,
                self.output()
            )),
            Err(e) => Err(format!("cannot wait for {}: {e}", self.name)),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let p =
            std::env::temp_dir().join(format!("swiftiply-smuggling-diff-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let p = self.0.join(name);
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// `target/` (this binary is target/<profile>/deps/smuggling_diff-<hash>).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// `cargo build --release --bin swiftiply` (at most 30 minutes), then the
/// binary's path.
fn build_swiftiply() -> Result<PathBuf, String> {
    println!("== building: cargo build --release --bin swiftiply");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["build", "--release", "--bin", "swiftiply"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let until = Instant::now() + Duration::from_secs(1800);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for cargo: {e}"))?
        {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the build took over 30 minutes".into());
        }
        thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }
    let bin = target_dir().join("release").join("swiftiply");
    if !bin.is_file() {
        return Err(format!("the build did not produce {}", bin.display()));
    }
    Ok(bin)
}

/// A GET through `addr` until the backend answers it (at most 10 s).
fn warm_up(addr: SocketAddr, proc: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        proc.check_alive()?;
        let last = match get_once(addr) {
            Ok(true) => return Ok(()),
            Ok(false) => "no backend response".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not pass a request to its backend within 10 s (last: {last}); \
                 output:\n{}",
                proc.name,
                proc.output()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn get_once(addr: SocketAddr) -> io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"GET /warm-up HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => break,
            Err(e) => return Err(e),
        }
        if parse_responses(&got).0.iter().any(|r| r.target.is_some()) {
            return Ok(true);
        }
    }
    Ok(parse_responses(&got).0.iter().any(|r| r.target.is_some()))
}

fn swiftiply_config() -> String {
    "cluster_address: 127.0.0.1
cluster_port: 0
timeout: 5
logger: {log_level: 0}
map:
  - incoming: app.test
    outgoing: 127.0.0.1:0
    default: true
"
    .to_string()
}

/// Swiftiply and its dialing-in backend.
fn start_swiftiply(
    bin: &Path,
    dir: &TempDir,
) -> Result<(Proc, SocketAddr, RecordingBackend), String> {
    let config = dir.write("swiftiply.yml", &swiftiply_config())?;
    let mut cmd = Command::new(bin);
    cmd.arg(&config);
    let mut proc = Proc::spawn("swiftiply", cmd)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = proc.output();
        if out.lines().any(|l| l.trim() == "swiftiply: ready") {
            break out;
        }
        proc.check_alive()?;
        if Instant::now() >= deadline {
            return Err(format!("swiftiply did not report ready in 10 s:\n{out}"));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let find_addr = |prefix: &str| -> Result<SocketAddr, String> {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| format!("no {prefix:?} line in swiftiply's output:\n{out}"))
    };
    let clients = find_addr("swiftiply: clients listening on ")?;
    let backends = find_addr("swiftiply: section 0 backends listening on ")?;
    let be = RecordingBackend::dial_in(backends, BACKENDS);
    warm_up(clients, &mut proc)?;
    Ok((proc, clients, be))
}

fn haproxy_config(front: SocketAddr, server: SocketAddr) -> String {
    format!(
        "global
    nbthread 1
    maxconn 256

defaults
    mode http
    maxconn 256
    http-reuse never
    timeout connect 2s
    timeout client 5s
    timeout server 5s

frontend fe
    bind {front}
    default_backend be

backend be
    server s1 {server}
"
    )
}

/// HAProxy and its listening backend; the config it runs with.
fn start_haproxy(
    bin: &Path,
    dir: &TempDir,
) -> Result<(Proc, SocketAddr, RecordingBackend, String), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind: {e}"))?;
    let server = listener.local_addr().map_err(|e| e.to_string())?;
    let be = RecordingBackend::listen(listener).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    // The free port may be taken between the probe and HAProxy's bind.
    for _ in 0..3 {
        let front: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let config = haproxy_config(front, server);
        let path = dir.write("haproxy.cfg", &config)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-db").arg("-f").arg(&path);
        let mut proc = Proc::spawn("haproxy", cmd)?;
        match warm_up(front, &mut proc) {
            Ok(()) => return Ok((proc, front, be, config)),
            Err(e) => errors.push(e),
        }
    }
    Err(format!("haproxy did not start: {}", errors.join("\n")))
}

fn haproxy_program(opt: Option<&Path>) -> PathBuf {
    if let Some(p) = opt {
        return p.to_path_buf();
    }
    let default = Path::new("/usr/sbin/haproxy");
    if default.is_file() {
        default.to_path_buf()
    } else {
        PathBuf::from("haproxy")
    }
}

fn first_line_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().map(str::to_string)
        })
        .unwrap_or_else(|| "(unknown)".into())
}

// ---------------------------------------------------------------------------
// Running all cases against one proxy
// ---------------------------------------------------------------------------

struct ProxyRun {
    judged: Vec<Judged>,
    /// Per case: the backend's events, described.
    details: Vec<Vec<String>>,
    sides: Vec<ClientSide>,
    took: Duration,
}

fn run_all(
    name: &str,
    addr: SocketAddr,
    be: &RecordingBackend,
    cases: &[&Case],
    deadline: Instant,
) -> ProxyRun {
    let started = Instant::now();
    let mut events = Vec::new();
    be.drain(&mut events);
    events.clear();
    let mut sides = Vec::with_capacity(cases.len());
    let mut unreachable = 0;
    for (i, case) in cases.iter().enumerate() {
        if Instant::now() >= deadline {
            sides.push(ClientSide {
                received: Vec::new(),
                closed: false,
                backend_bytes: 0,
                took: Duration::ZERO,
                error: Some("the run's deadline passed".into()),
            });
            continue;
        }
        if unreachable >= 3 {
            sides.push(ClientSide {
                received: Vec::new(),
                closed: false,
                backend_bytes: 0,
                took: Duration::ZERO,
                error: Some(format!("{name} stopped accepting connections")),
            });
            continue;
        }
        let cs = run_case(addr, be, &mut events, i, case);
        if cs.error.is_some() {
            unreachable += 1;
        } else {
            unreachable = 0;
        }
        if (i + 1) % 100 == 0 {
            eprintln!(
                "  {name}: {} of {} cases, {:.0} s",
                i + 1,
                cases.len(),
                started.elapsed().as_secs_f64()
            );
        }
        sides.push(cs);
    }
    be.shared.case.store(NO_CASE, Ordering::SeqCst);
    thread::sleep(QUIET);
    be.drain(&mut events);
    let took = started.elapsed();
    let mut judged = Vec::with_capacity(cases.len());
    let mut details = Vec::with_capacity(cases.len());
    for (i, (case, cs)) in cases.iter().zip(&sides).enumerate() {
        let mine: Vec<&Event> = events.iter().filter(|e| e.case == i).collect();
        details.push(mine.iter().map(|e| e.what.describe()).collect());
        judged.push(judge(case, cs, &mine));
    }
    ProxyRun {
        judged,
        details,
        sides,
        took,
    }
}

// ---------------------------------------------------------------------------
// The run and its report
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Class {
    BothRefuse,
    BothWait,
    OneWaits,
    BothForwardSame,
    BothForwardDifferent,
    SwiftiplyRefusesHaproxyForwards,
    SwiftiplyForwardsHaproxyRefuses,
    Skipped,
}

impl Class {
    fn of(s: &Judged, h: &Judged) -> Class {
        match (&s.verdict, &h.verdict) {
            (Verdict::Skipped(_), _) | (_, Verdict::Skipped(_)) => Class::Skipped,
            (Verdict::Waiting(_), Verdict::Waiting(_)) => Class::BothWait,
            (Verdict::Waiting(_), _) | (_, Verdict::Waiting(_)) => Class::OneWaits,
            (Verdict::Forwarded, Verdict::Forwarded) => {
                if s.framed == h.framed {
                    Class::BothForwardSame
                } else {
                    Class::BothForwardDifferent
                }
            }
            (Verdict::Forwarded, _) => Class::SwiftiplyForwardsHaproxyRefuses,
            (_, Verdict::Forwarded) => Class::SwiftiplyRefusesHaproxyForwards,
            _ => Class::BothRefuse,
        }
    }
}

/// The group a case is listed under: its source tag, and for a generated
/// case its template (`smuggler/clte`).
fn group_of(case: &Case) -> String {
    let tag = case.source.split(';').next().unwrap_or("").trim();
    let tag = if tag.starts_with("generated") || tag.is_empty() {
        "-"
    } else {
        tag
    };
    match case.source.split_once("generated: ") {
        Some((_, template)) => {
            let t = template.split(':').next().unwrap_or(template);
            format!("{tag}/{t}")
        }
        None => tag.to_string(),
    }
}

fn expect_label(e: Option<Expect>) -> String {
    match e {
        None => "-".into(),
        Some(Expect::Forwarded) => "forwarded".into(),
        Some(Expect::Refused(None)) => "refused".into(),
        Some(Expect::Refused(Some(s))) => format!("refused {s}"),
    }
}

fn short(j: &Judged) -> String {
    match &j.verdict {
        Verdict::Forwarded => {
            let mut s = format!("forwarded [{}]", j.framed.join(" | "));
            if !j.desyncs.is_empty() {
                s.push_str(&format!(" DESYNC: {}", j.desyncs.join("; ")));
            }
            if !j.strict_rejects.is_empty() {
                s.push_str(&format!(" ({})", j.strict_rejects.join("; ")));
            }
            s
        }
        other => other.label(),
    }
}

fn reason(class: Class, s: &Judged, h: &Judged) -> String {
    match class {
        Class::SwiftiplyRefusesHaproxyForwards => {
            format!("Swiftiply {}; HAProxy {}", s.verdict.label(), short(h))
        }
        Class::SwiftiplyForwardsHaproxyRefuses => {
            format!("Swiftiply {}; HAProxy {}", short(s), h.verdict.label())
        }
        _ => format!("Swiftiply {}; HAProxy {}", short(s), short(h)),
    }
}

fn run(opts: &Options) -> Result<(), String> {
    let all = corpus::load();
    let cases: Vec<&Case> = all
        .iter()
        .filter(|c| opts.only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    if cases.is_empty() {
        return Err(format!("no case matches {:?}", opts.only));
    }
    let out_path = opts
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("smuggling-diff.txt"));
    let swiftiply_bin = match &opts.swiftiply {
        Some(p) => p.clone(),
        None => build_swiftiply()?,
    };
    let haproxy_bin = haproxy_program(opts.haproxy.as_deref());
    let haproxy_version = first_line_of(&haproxy_bin, &["-v"])
        .split(" - ")
        .next()
        .unwrap_or_default()
        .to_string();

    let dir = TempDir::new()?;
    let (mut sw_proc, sw_addr, sw_be) = start_swiftiply(&swiftiply_bin, &dir)?;
    let (mut ha_proc, ha_addr, ha_be, ha_config) = start_haproxy(&haproxy_bin, &dir)?;
    let hand = all
        .iter()
        .filter(|c| !c.source.contains("generated:"))
        .count();
    println!(
        "== smuggling corpus: {} cases ({} selected); Swiftiply at {sw_addr}, {} at {ha_addr}",
        all.len(),
        cases.len(),
        haproxy_version
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.max_secs);
    let (sw_run, ha_run) = thread::scope(|scope| {
        if opts.serial {
            let s = run_all("swiftiply", sw_addr, &sw_be, &cases, deadline);
            let h = run_all("haproxy", ha_addr, &ha_be, &cases, deadline);
            (s, h)
        } else {
            let s = scope.spawn(|| run_all("swiftiply", sw_addr, &sw_be, &cases, deadline));
            let h = run_all("haproxy", ha_addr, &ha_be, &cases, deadline);
            (s.join().expect("the swiftiply runner panicked"), h)
        }
    });
    let elapsed = started.elapsed();
    let sw_alive = sw_proc.check_alive();
    let ha_alive = ha_proc.check_alive();
    drop(sw_be);
    drop(ha_be);
    drop(sw_proc);
    drop(ha_proc);

    // Classify.
    let classes: Vec<Class> = sw_run
        .judged
        .iter()
        .zip(&ha_run.judged)
        .map(|(s, h)| Class::of(s, h))
        .collect();
    let count = |c: Class| classes.iter().filter(|&&x| x == c).count();
    let both_refuse_same_status = classes
        .iter()
        .zip(sw_run.judged.iter().zip(&ha_run.judged))
        .filter(|(&c, (s, h))| c == Class::BothRefuse && s.verdict == h.verdict)
        .count();
    let desync_cases = |r: &ProxyRun| r.judged.iter().filter(|j| !j.desyncs.is_empty()).count();
    let strict_cases = |r: &ProxyRun| {
        r.judged
            .iter()
            .filter(|j| !j.strict_rejects.is_empty())
            .count()
    };
    let mut verdicts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    // One row per kind of verdict (not per byte count).
    let row = |v: &Verdict| match v {
        Verdict::Waiting(n) if *n > 0 => "waits for the rest, part forwarded".to_string(),
        other => other.label(),
    };
    for j in &sw_run.judged {
        verdicts.entry(row(&j.verdict)).or_default().0 += 1;
    }
    for j in &ha_run.judged {
        verdicts.entry(row(&j.verdict)).or_default().1 += 1;
    }

    let mut report = String::new();
    let r = &mut report;
    let _ = writeln!(
        r,
        "command: cargo bench --bench smuggling_diff -- --run{}",
        {
            let mut a = String::new();
            if let Some(o) = &opts.only {
                a.push_str(&format!(" --only {o}"));
            }
            if opts.serial {
                a.push_str(" --serial");
            }
            a
        }
    );
    let _ = writeln!(r, "haproxy: {haproxy_version} (config below)");
    let _ = writeln!(
        r,
        "cases: {} of {} ({} hand-written, {} generated in the corpus)",
        cases.len(),
        all.len(),
        hand,
        all.len() - hand
    );
    let _ = writeln!(
        r,
        "run time: {:.1} s ({}; Swiftiply {:.1} s, HAProxy {:.1} s)",
        elapsed.as_secs_f64(),
        if opts.serial {
            "one proxy after the other"
        } else {
            "both proxies at once"
        },
        sw_run.took.as_secs_f64(),
        ha_run.took.as_secs_f64()
    );
    for (name, alive) in [("swiftiply", &sw_alive), ("haproxy", &ha_alive)] {
        if let Err(e) = alive {
            let _ = writeln!(r, "WARNING: {name} died during the run: {e}");
        }
    }
    let _ = writeln!(r);
    let _ = writeln!(r, "{:<46} {:>6}", "", "cases");
    let rows = [
        (
            format!("both refuse (same status: {both_refuse_same_status})"),
            count(Class::BothRefuse),
        ),
        (
            "both wait for the rest of the request".to_string(),
            count(Class::BothWait),
        ),
        (
            "one waits for the rest, the other does not".to_string(),
            count(Class::OneWaits),
        ),
        (
            "both forward, their backends frame it the same".to_string(),
            count(Class::BothForwardSame),
        ),
        (
            "both forward, framed differently".to_string(),
            count(Class::BothForwardDifferent),
        ),
        (
            "Swiftiply refuses, HAProxy forwards".to_string(),
            count(Class::SwiftiplyRefusesHaproxyForwards),
        ),
        (
            "Swiftiply forwards, HAProxy refuses".to_string(),
            count(Class::SwiftiplyForwardsHaproxyRefuses),
        ),
        ("skipped".to_string(), count(Class::Skipped)),
    ];
    for (label, n) in rows {
        let _ = writeln!(r, "{label:<46} {n:>6}");
    }
    let _ = writeln!(r);
    let _ = writeln!(r, "{:<46} {:>9} {:>9}", "", "Swiftiply", "HAProxy");
    for (label, (s, h)) in &verdicts {
        let _ = writeln!(r, "{label:<46} {s:>9} {h:>9}");
    }
    let _ = writeln!(
        r,
        "{:<46} {:>9} {:>9}",
        "cases with a desync at the backend",
        desync_cases(&sw_run),
        desync_cases(&ha_run)
    );
    let _ = writeln!(
        r,
        "{:<46} {:>9} {:>9}",
        "cases forwarding what a strict parser rejects",
        strict_cases(&sw_run),
        strict_cases(&ha_run)
    );

    let section = |r: &mut String, title: &str, pick: &dyn Fn(usize) -> Option<String>| {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, case) in cases.iter().enumerate() {
            if let Some(line) = pick(i) {
                groups
                    .entry(group_of(case))
                    .or_default()
                    .push(format!("{}: {line}", case.name));
            }
        }
        let n: usize = groups.values().map(Vec::len).sum();
        let _ = writeln!(r, "\n== {title} ({n})");
        for (g, lines) in groups {
            let _ = writeln!(r, "  [{g}] ({})", lines.len());
            for l in lines {
                let _ = writeln!(r, "    {l}");
            }
        }
    };
    for class in [
        Class::SwiftiplyForwardsHaproxyRefuses,
        Class::SwiftiplyRefusesHaproxyForwards,
        Class::BothForwardDifferent,
        Class::OneWaits,
        Class::Skipped,
    ] {
        let title = match class {
            Class::SwiftiplyForwardsHaproxyRefuses => "Swiftiply forwards, HAProxy refuses",
            Class::SwiftiplyRefusesHaproxyForwards => "Swiftiply refuses, HAProxy forwards",
            Class::BothForwardDifferent => "both forward, framed differently",
            Class::OneWaits => "one waits for the rest, the other does not",
            _ => "skipped",
        };
        section(r, title, &|i| {
            (classes[i] == class).then(|| {
                let (s, h) = (&sw_run.judged[i], &ha_run.judged[i]);
                let mut line = reason(class, s, h);
                if cases[i].expect.is_some() {
                    line.push_str(&format!(
                        " (corpus expects {})",
                        expect_label(cases[i].expect)
                    ));
                }
                line
            })
        });
    }
    for (name, run) in [("Swiftiply", &sw_run), ("HAProxy", &ha_run)] {
        section(r, &format!("desyncs behind {name}"), &|i| {
            let j = &run.judged[i];
            (!j.desyncs.is_empty()).then(|| j.desyncs.join("; "))
        });
    }
    for (name, run) in [("Swiftiply", &sw_run), ("HAProxy", &ha_run)] {
        section(
            r,
            &format!("{name} forwards what a strict parser rejects"),
            &|i| {
                let j = &run.judged[i];
                (!j.strict_rejects.is_empty()).then(|| j.strict_rejects.join("; "))
            },
        );
    }
    let _ = writeln!(r, "\nfull per-case results: {}", out_path.display());
    print!("{report}");

    // The per-case file.
    let mut full = String::new();
    let f = &mut full;
    let _ = writeln!(f, "{report}");
    let _ = writeln!(f, "== HAProxy configuration\n{ha_config}");
    let _ = writeln!(f, "== Swiftiply configuration\n{}", swiftiply_config());
    let _ = writeln!(f, "== per case");
    for (i, case) in cases.iter().enumerate() {
        let _ = writeln!(
            f,
            "\n=== {} [{}] -> {:?}",
            case.name, case.source, classes[i]
        );
        let _ = writeln!(f, "bytes: {}", show(&case.bytes, 2000));
        let _ = writeln!(f, "corpus expects: {}", expect_label(case.expect));
        for (name, run) in [("swiftiply", &sw_run), ("haproxy", &ha_run)] {
            let j = &run.judged[i];
            let cs = &run.sides[i];
            let _ = writeln!(
                f,
                "{name}: {} ({} ms)",
                j.verdict.label(),
                cs.took.as_millis()
            );
            let _ = writeln!(f, "  client got: {}", j.responses);
            let _ = writeln!(f, "  raw: {}", show(&cs.received, 600));
            for d in &run.details[i] {
                let _ = writeln!(f, "  backend: {d}");
            }
            for d in &j.desyncs {
                let _ = writeln!(f, "  DESYNC: {d}");
            }
            for d in &j.strict_rejects {
                let _ = writeln!(f, "  STRICT: {d}");
            }
        }
    }
    if let Some(parent) = out_path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&out_path, full)
        .map_err(|e| format!("cannot write {}: {e}", out_path.display()))?;
    Ok(())
}
