//! The access log end to end (`access_log: PATH` or `stderr`): every way a
//! request can end writes one line whose fields match what the client and
//! the backend saw — addresses, the request line, byte counts counted on the
//! client side, section, backend, the three durations and the termination
//! word — with client bytes escaped so that a line can never be split or
//! forged; the file is reopened on SIGUSR1 and switched by a reload; two
//! workers never interleave their lines; a path that cannot be opened stops
//! the start.
//!
//! Each worker writes its lines once per event-loop turn, so every test
//! polls the file with a deadline until the lines it expects are there.

mod common;

use common::*;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(10);

const TERMINATIONS: [&str; 11] = [
    "ok",
    "static",
    "local",
    "bad_request",
    "no_section",
    "queue_timeout",
    "backend_failed",
    "backend_timeout",
    "client_closed",
    "client_timeout",
    "shutdown",
];

// ---------------------------------------------------------------------------
// Parsing a line
// ---------------------------------------------------------------------------

/// A quoted field: its text as written (escapes included) and the bytes it
/// stands for.
#[derive(Debug)]
struct Quoted {
    raw: String,
    bytes: Vec<u8>,
}

/// One line of the access log, field by field.
#[derive(Debug)]
struct Entry {
    line: String,
    client: String,
    ident: String,
    user: String,
    /// Seconds since the epoch, from `[DD/Mon/YYYY:HH:MM:SS +0000]`.
    time: u64,
    request: Quoted,
    /// `None` for `-` (no response sent).
    status: Option<u16>,
    bytes_out: u64,
    referer: Quoted,
    user_agent: Quoted,
    section: String,
    backend: String,
    wait_ms: Option<f64>,
    backend_ms: Option<f64>,
    total_ms: f64,
    bytes_in: u64,
    termination: String,
}

/// What is left of a line being split into fields.
struct Fields<'a> {
    rest: &'a str,
}

impl<'a> Fields<'a> {
    /// An unquoted field, up to the next space (consumed) or the line's end.
    fn word(&mut self, what: &str) -> Result<&'a str, String> {
        let (word, rest) = match self.rest.find(' ') {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, ""),
        };
        if word.is_empty() {
            return Err(format!("{what}: empty field at {:?}", self.rest));
        }
        self.rest = rest;
        Ok(word)
    }

    fn number(&mut self, what: &str) -> Result<u64, String> {
        let w = self.word(what)?;
        if !w.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{what}: {w:?} is not a number"));
        }
        w.parse().map_err(|e| format!("{what}: {w:?}: {e}"))
    }

    /// Milliseconds with exactly three decimals, or `-` (`None`).
    fn millis(&mut self, what: &str) -> Result<Option<f64>, String> {
        let w = self.word(what)?;
        if w == "-" {
            return Ok(None);
        }
        let ok = w.split_once('.').is_some_and(|(int, frac)| {
            !int.is_empty()
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.len() == 3
                && frac.bytes().all(|b| b.is_ascii_digit())
        });
        if !ok {
            return Err(format!("{what}: {w:?} is not milliseconds like 12.345"));
        }
        w.parse()
            .map(Some)
            .map_err(|e| format!("{what}: {w:?}: {e}"))
    }

    /// `[...]` then a space.
    fn bracketed(&mut self, what: &str) -> Result<&'a str, String> {
        let inner = self
            .rest
            .strip_prefix('[')
            .and_then(|r| r.split_once("] "))
            .ok_or_else(|| format!("{what}: no [...] at {:?}", self.rest))?;
        self.rest = inner.1;
        Ok(inner.0)
    }

    /// `"..."` then a space; only printable ASCII inside, `"` and `\`
    /// escaped, other bytes as `\xHH` in lower-case hex.
    fn quoted(&mut self, what: &str) -> Result<Quoted, String> {
        let body = self
            .rest
            .strip_prefix('"')
            .ok_or_else(|| format!("{what}: no opening quote at {:?}", self.rest))?;
        let b = body.as_bytes();
        let mut bytes = Vec::new();
        let mut i = 0;
        loop {
            match b.get(i) {
                None => return Err(format!("{what}: no closing quote in {body:?}")),
                Some(b'"') => break,
                Some(b'\\') => match b.get(i + 1) {
                    Some(&c @ (b'"' | b'\\')) => {
                        bytes.push(c);
                        i += 2;
                    }
                    Some(b'x') => {
                        let hex = b.get(i + 2..i + 4).unwrap_or_default();
                        let lower_hex = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
                        if hex.len() != 2 || !hex.iter().all(lower_hex) {
                            return Err(format!("{what}: bad \\x escape in {body:?}"));
                        }
                        let hex = std::str::from_utf8(hex).expect("ASCII hex digits");
                        bytes.push(u8::from_str_radix(hex, 16).expect("two hex digits"));
                        i += 4;
                    }
                    _ => return Err(format!("{what}: bad escape in {body:?}")),
                },
                Some(&c) if (0x20..0x7f).contains(&c) => {
                    bytes.push(c);
                    i += 1;
                }
                Some(c) => return Err(format!("{what}: unescaped byte {c:#04x} in {body:?}")),
            }
        }
        let raw = body[..i].to_string();
        self.rest = body[i + 1..]
            .strip_prefix(' ')
            .ok_or_else(|| format!("{what}: no space after the closing quote"))?;
        Ok(Quoted { raw, bytes })
    }
}

fn parse_entry(line: &str) -> Result<Entry, String> {
    if line.ends_with(' ') {
        return Err("a trailing space".into());
    }
    let mut f = Fields { rest: line };
    let client = f.word("CLIENT")?.to_string();
    let ident = f.word("identity")?.to_string();
    let user = f.word("user")?.to_string();
    let time = clf_seconds(f.bracketed("time")?)?;
    let request = f.quoted("request")?;
    let status = match f.word("STATUS")? {
        "-" => None,
        s if s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()) => {
            Some(s.parse().expect("three digits"))
        }
        s => return Err(format!("STATUS: {s:?}")),
    };
    let bytes_out = f.number("BYTES_OUT")?;
    let referer = f.quoted("REFERER")?;
    let user_agent = f.quoted("USER_AGENT")?;
    let section = f.word("SECTION")?.to_string();
    let backend = f.word("BACKEND")?.to_string();
    let wait_ms = f.millis("WAIT_MS")?;
    let backend_ms = f.millis("BACKEND_MS")?;
    let total_ms = f.millis("TOTAL_MS")?.ok_or("TOTAL_MS is `-`")?;
    let bytes_in = f.number("BYTES_IN")?;
    let termination = f.word("TERMINATION")?.to_string();
    if !TERMINATIONS.contains(&termination.as_str()) {
        return Err(format!("TERMINATION {termination:?} is not a known word"));
    }
    if !f.rest.is_empty() {
        return Err(format!("more after TERMINATION: {:?}", f.rest));
    }
    Ok(Entry {
        line: line.to_string(),
        client,
        ident,
        user,
        time,
        request,
        status,
        bytes_out,
        referer,
        user_agent,
        section,
        backend,
        wait_ms,
        backend_ms,
        total_ms,
        bytes_in,
        termination,
    })
}

fn parse_or_panic(line: &str) -> Entry {
    parse_entry(line).unwrap_or_else(|e| panic!("malformed access log line ({e}):\n{line}"))
}

/// `DD/Mon/YYYY:HH:MM:SS +0000` as seconds since the epoch.
fn clf_seconds(s: &str) -> Result<u64, String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let bad = || format!("time {s:?} is not DD/Mon/YYYY:HH:MM:SS +0000");
    let b = s.as_bytes();
    if b.len() != 26 || &s[2..3] != "/" || &s[6..7] != "/" || &s[20..] != " +0000" {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        let t = &s[r];
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (day, year) = (num(0..2)?, num(7..11)?);
    let month = MONTHS.iter().position(|&m| m == &s[3..6]).ok_or_else(bad)? as i64 + 1;
    if [11, 14, 17].iter().any(|&i| b[i] != b':') {
        return Err(bad());
    }
    let (h, m, sec) = (num(12..14)?, num(15..17)?, num(18..20)?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return Err(bad());
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + m * 60 + sec).map_err(|_| bad())
}

#[test]
fn the_line_parser_splits_escaped_quoted_fields_and_checks_the_time() {
    let e = parse_or_panic(
        "203.0.113.7 - - [29/Feb/2024:12:34:56 +0000] \"GET /a\\\"b HTTP/1.1\" 200 5120 \
         \"-\" \"x \\\\\\\" y\\xc3\\xa9\" shop.example a1b2c3d4e5f6 0.042 - 12.401 431 ok",
    );
    assert_eq!(e.time, 1_709_210_096);
    assert_eq!(e.request.raw, "GET /a\\\"b HTTP/1.1");
    assert_eq!(e.request.bytes, b"GET /a\"b HTTP/1.1");
    assert_eq!(e.user_agent.bytes, b"x \\\" y\xc3\xa9");
    assert_eq!((e.wait_ms, e.backend_ms), (Some(0.042), None));
    assert_eq!(clf_seconds("01/Jan/1970:00:00:00 +0000"), Ok(0));
    assert!(parse_entry("1.2.3.4 - - [x] \"-\" - 0 \"-\" \"-\" - - - - 1.000 0 ok").is_err());
    assert!(parse_entry(&e.line.replace(" ok", "  ok")).is_err());
    assert!(parse_entry(&e.line.replace("\\xc3", "\\xC3")).is_err());
    assert!(parse_entry(&e.line.replace("0.042", "0.42")).is_err());
}

// ---------------------------------------------------------------------------
// Reading the log, talking to the proxy
// ---------------------------------------------------------------------------

/// The complete lines of the log at `path`; `None` while a line is still
/// partial. The file must be ASCII: every other byte is escaped.
fn complete_lines(path: &Path) -> Option<Vec<String>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", path.display()),
    };
    if !bytes.is_empty() && bytes.last() != Some(&b'\n') {
        return None;
    }
    assert!(
        bytes.is_ascii(),
        "non-ASCII byte in the access log:\n{}",
        String::from_utf8_lossy(&bytes)
    );
    let text = String::from_utf8(bytes).expect("ASCII");
    Some(text.lines().map(str::to_string).collect())
}

/// Waits until the log at `path` holds `n` complete lines, and checks that
/// it holds exactly that many, each well formed.
fn wait_entries(path: &Path, n: usize) -> Vec<Entry> {
    let mut lines = Vec::new();
    let arrived = eventually(T, || match complete_lines(path) {
        Some(l) => {
            lines = l;
            lines.len() >= n
        }
        None => false,
    });
    assert!(
        arrived,
        "{} of {n} lines in {} within {T:?}:\n{}",
        lines.len(),
        path.display(),
        lines.join("\n")
    );
    assert_eq!(
        lines.len(),
        n,
        "more lines than requests in {}:\n{}",
        path.display(),
        lines.join("\n")
    );
    lines.iter().map(|l| parse_or_panic(l)).collect()
}

/// The one entry whose termination is `word`.
fn entry_ending<'a>(entries: &'a [Entry], word: &str) -> &'a Entry {
    let found: Vec<&Entry> = entries.iter().filter(|e| e.termination == word).collect();
    assert_eq!(found.len(), 1, "one `{word}` line expected in {entries:#?}");
    found[0]
}

/// A temp dir for the log and the `access_log:` line naming its file.
fn log_file(tag: &str) -> (TempDir, PathBuf, String) {
    let dir = TempDir::new(tag);
    let path = dir.path.join("access.log");
    let top = format!("access_log: {}", path.display());
    (dir, path, top)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, T).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(T)).expect("read timeout");
    s.set_write_timeout(Some(T)).expect("write timeout");
    s
}

/// Every byte the proxy sends until it closes the connection (or resets
/// it); panics if it stays open past the deadline.
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    if !receive_to_close(s, &mut got, T) {
        panic!(
            "the proxy kept the connection open past {T:?}; got {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    got
}

/// Sends `request` on a fresh connection and returns every byte received
/// until the proxy closed it.
fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    s.write_all(request).expect("send the request");
    read_until_closed(&mut s)
}

fn status_of(response: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(response);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP/1.1 response: {text:?}"))
}

/// Bytes a client received for a Content-Length response.
fn wire_len(r: &Response) -> u64 {
    (r.raw_head.len() + r.body.len()) as u64
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn wait_joined(p: &Proxy, n: usize) {
    assert!(
        p.wait_for_log_count(" joined section ", n, T),
        "{n} backends did not join; stderr:\n{}",
        p.stderr_text()
    );
}

/// Checks the fields every entry of a request no backend took shares.
fn assert_no_backend(e: &Entry) {
    assert_eq!(e.backend, "-", "{}", e.line);
    assert_eq!(e.wait_ms, None, "WAIT_MS: {}", e.line);
    assert_eq!(e.backend_ms, None, "BACKEND_MS: {}", e.line);
}

// ---------------------------------------------------------------------------
// Requests a backend answered
// ---------------------------------------------------------------------------

#[test]
fn a_proxied_request_shows_every_field_as_the_client_and_backend_saw_it() {
    let (_dir, path, top) = log_file("alog-full");
    let p = Proxy::start(&one_section(&top, ""));
    let id = id12("alogfull", 1);
    let mut b = Backend::connect(p.backend_addr(0), &id, "");
    let backend = thread::spawn(move || {
        let req = b.expect_request();
        thread::sleep(Duration::from_millis(150));
        b.respond("200 OK", &[("X-A", "b")], b"hello, access log");
        req
    });

    let request: &[u8] = b"GET /path?q=1 HTTP/1.1\r\nHost: app.test\r\n\
        Referer: http://ref.test/from?x=1\r\nUser-Agent: logtest/1.0 (scenario one)\r\n\
        Connection: close\r\n\r\n";
    let before = now_secs();
    let got = exchange(p.client_addr(), request);
    let after = now_secs();
    assert_eq!(status_of(&got), 200, "{:?}", String::from_utf8_lossy(&got));
    assert!(got.ends_with(b"\r\n\r\nhello, access log"));
    let seen = join_within(backend, T, "backend");
    assert_eq!(seen.target, "/path?q=1");

    let e = &wait_entries(&path, 1)[0];
    let l = &e.line;
    assert_eq!(e.client, "127.0.0.1", "{l}");
    assert_eq!((e.ident.as_str(), e.user.as_str()), ("-", "-"), "{l}");
    assert!(
        before.saturating_sub(1) <= e.time && e.time <= after + 1,
        "time {} not within [{before}, {after}]: {l}",
        e.time
    );
    assert_eq!(e.request.raw, "GET /path?q=1 HTTP/1.1", "{l}");
    assert_eq!(e.status, Some(200), "{l}");
    assert_eq!(e.bytes_out, got.len() as u64, "BYTES_OUT: {l}");
    assert_eq!(e.referer.raw, "http://ref.test/from?x=1", "{l}");
    assert_eq!(e.user_agent.raw, "logtest/1.0 (scenario one)", "{l}");
    assert_eq!(e.section, "app.test", "{l}");
    assert_eq!(e.backend, id, "{l}");
    let wait = e.wait_ms.unwrap_or_else(|| panic!("no WAIT_MS: {l}"));
    let backend_ms = e.backend_ms.unwrap_or_else(|| panic!("no BACKEND_MS: {l}"));
    assert!(wait >= 0.0, "{l}");
    assert!(backend_ms >= 150.0, "the backend took 150 ms: {l}");
    assert!(e.total_ms >= backend_ms, "{l}");
    assert!(e.total_ms + 0.002 >= wait + backend_ms, "{l}");
    assert_eq!(e.bytes_in, request.len() as u64, "BYTES_IN: {l}");
    assert_eq!(e.termination, "ok", "{l}");
}

#[test]
fn each_request_on_a_kept_alive_connection_has_its_own_line_and_byte_counts() {
    let (_dir, path, top) = log_file("alog-keepalive");
    let p = Proxy::start(&one_section(&top, ""));
    let farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    wait_joined(&p, 1);

    let mut c = Client::connect(p.client_addr());
    let first: &[u8] = b"GET /first HTTP/1.1\r\nHost: app.test\r\nUser-Agent: one\r\n\r\n";
    let second: &[u8] = b"POST /second HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\
        Content-Length: 11\r\n\r\nhello world";
    let r1 = c.request(first);
    let r2 = c.request(second);
    assert_eq!((r1.status, r2.status), (200, 200), "{r1:?} {r2:?}");

    let entries = wait_entries(&path, 2);
    let (e1, e2) = (&entries[0], &entries[1]);
    assert_eq!(e1.request.raw, "GET /first HTTP/1.1", "{}", e1.line);
    assert_eq!(e2.request.raw, "POST /second HTTP/1.0", "{}", e2.line);
    assert_eq!(
        (e1.bytes_in, e1.bytes_out),
        (first.len() as u64, wire_len(&r1)),
        "{}",
        e1.line
    );
    assert_eq!(
        (e2.bytes_in, e2.bytes_out),
        (second.len() as u64, wire_len(&r2)),
        "{}",
        e2.line
    );
    assert_eq!(e1.user_agent.raw, "one", "{}", e1.line);
    assert_eq!(
        (e2.user_agent.raw.as_str(), e2.referer.raw.as_str()),
        ("-", "-"),
        "{}",
        e2.line
    );
    for e in &entries {
        assert_eq!(e.backend, farm.ids[0], "{}", e.line);
        assert_eq!(e.termination, "ok", "{}", e.line);
    }
}

#[test]
fn a_request_queued_behind_a_slow_one_shows_its_wait() {
    let (_dir, path, top) = log_file("alog-wait");
    let p = Proxy::start(&one_section(&top, ""));
    let id = id12("alogwait", 1);
    let mut b = Backend::connect(p.backend_addr(0), &id, "");

    let mut first = Client::connect(p.client_addr());
    first.send(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let req = b.expect_request();
    assert_eq!(req.target, "/first");
    // The only backend is busy: the second request queues until the first
    // is answered, 300 ms from now.
    let mut second = Client::connect(p.client_addr());
    second.send(b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n");
    thread::sleep(Duration::from_millis(300));
    b.respond_echo(&req);
    assert_eq!(first.read_response(false).status, 200);
    let req = b.expect_request();
    assert_eq!(req.target, "/second");
    b.respond_echo(&req);
    assert_eq!(second.read_response(false).status, 200);

    let entries = wait_entries(&path, 2);
    let by_target = |t: &str| {
        entries
            .iter()
            .find(|e| e.request.raw == format!("GET {t} HTTP/1.1"))
            .unwrap_or_else(|| panic!("no line for {t}: {entries:#?}"))
    };
    let (e1, e2) = (by_target("/first"), by_target("/second"));
    let wait1 = e1.wait_ms.expect("WAIT_MS of the first");
    let wait2 = e2.wait_ms.expect("WAIT_MS of the second");
    assert!(wait2 >= 250.0, "the second waited ~300 ms: {}", e2.line);
    assert!(wait1 < wait2, "{}\n{}", e1.line, e2.line);
    assert!(e2.total_ms >= wait2, "{}", e2.line);
    for e in [e1, e2] {
        assert_eq!(e.backend, id, "{}", e.line);
        assert_eq!(e.termination, "ok", "{}", e.line);
    }
}

// ---------------------------------------------------------------------------
// Requests that ended otherwise
// ---------------------------------------------------------------------------

#[test]
fn an_unknown_host_and_a_malformed_request_have_no_section() {
    let (_dir, path, top) = log_file("alog-nosection");
    let p = Proxy::start(&config(
        &top,
        &[
            "incoming: a.test\noutgoing: 127.0.0.1:0",
            "incoming: b.test\noutgoing: 127.0.0.1:0",
        ],
    ));
    let unknown: &[u8] = b"GET /nowhere HTTP/1.1\r\nHost: unknown.test\r\nUser-Agent: lost\r\n\r\n";
    let got_404 = exchange(p.client_addr(), unknown);
    assert_eq!(status_of(&got_404), 404);
    let malformed: &[u8] = b"GET / HTTP/1.1\r\nHost: a.test\r\nBad Header\r\n\r\n";
    let got_400 = exchange(p.client_addr(), malformed);
    assert_eq!(status_of(&got_400), 400);

    let entries = wait_entries(&path, 2);
    let e = entry_ending(&entries, "no_section");
    assert_eq!(e.request.raw, "GET /nowhere HTTP/1.1", "{}", e.line);
    assert_eq!(e.status, Some(404), "{}", e.line);
    assert_eq!(e.bytes_out, got_404.len() as u64, "{}", e.line);
    assert_eq!(e.bytes_in, unknown.len() as u64, "{}", e.line);
    assert_eq!(e.user_agent.raw, "lost", "{}", e.line);
    assert_eq!(e.section, "-", "{}", e.line);
    assert_no_backend(e);

    let e = entry_ending(&entries, "bad_request");
    assert_eq!(e.request.raw, "-", "an unparsed request: {}", e.line);
    assert_eq!(e.status, Some(400), "{}", e.line);
    assert_eq!(e.bytes_out, got_400.len() as u64, "{}", e.line);
    assert_eq!(e.bytes_in, malformed.len() as u64, "{}", e.line);
    assert_eq!(
        (e.referer.raw.as_str(), e.user_agent.raw.as_str()),
        ("-", "-"),
        "{}",
        e.line
    );
    assert_eq!(e.section, "-", "{}", e.line);
    assert_no_backend(e);
    assert_eq!(e.client, "127.0.0.1", "{}", e.line);
}

#[test]
fn a_request_no_backend_takes_within_timeout_is_a_queue_timeout_with_its_wait() {
    let (_dir, path, top) = log_file("alog-qtimeout");
    let p = Proxy::start(&one_section(&format!("{top}\ntimeout: 1"), ""));
    let request: &[u8] = b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let got = exchange(p.client_addr(), request);
    assert_eq!(status_of(&got), 503);

    let e = &wait_entries(&path, 1)[0];
    let l = &e.line;
    assert_eq!(e.termination, "queue_timeout", "{l}");
    assert_eq!(e.status, Some(503), "{l}");
    assert_eq!(e.request.raw, "GET /slow HTTP/1.1", "{l}");
    assert_eq!(e.section, "app.test", "{l}");
    assert_eq!(e.backend, "-", "{l}");
    assert_eq!(e.backend_ms, None, "{l}");
    assert_eq!(e.bytes_out, got.len() as u64, "{l}");
    assert_eq!(e.bytes_in, request.len() as u64, "{l}");
    assert!(e.total_ms >= 900.0, "it queued for `timeout: 1`: {l}");
    // The request waited in the queue the whole second: docs/operations.md's example
    // line for a queue timeout shows that wait (`3000.112`).
    let wait = e
        .wait_ms
        .unwrap_or_else(|| panic!("WAIT_MS is `-` for a request that queued for 1 s: {l}"));
    assert!(wait >= 900.0 && wait <= e.total_ms, "{l}");
}

#[test]
fn a_backend_that_closes_mid_response_cuts_the_client_and_is_backend_failed() {
    let (_dir, path, top) = log_file("alog-cut");
    let p = Proxy::start(&one_section(&top, ""));
    let id = id12("alogcut", 1);
    let mut b = Backend::connect(p.backend_addr(0), &id, "");
    let backend = thread::spawn(move || {
        b.expect_request();
        b.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        // Dropping the connection cuts the response 90 bytes short.
    });
    let request: &[u8] = b"GET /cut HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let got = exchange(p.client_addr(), request);
    join_within(backend, T, "backend");
    assert_eq!(status_of(&got), 200);
    assert!(got.ends_with(b"\r\n\r\n0123456789"), "{got:?}");

    let e = &wait_entries(&path, 1)[0];
    let l = &e.line;
    assert_eq!(e.termination, "backend_failed", "{l}");
    assert_eq!(e.status, Some(200), "the head went out: {l}");
    assert_eq!(e.bytes_out, got.len() as u64, "{l}");
    assert_eq!(e.bytes_in, request.len() as u64, "{l}");
    assert_eq!(e.section, "app.test", "{l}");
    assert_eq!(e.backend, id, "{l}");
    assert!(e.wait_ms.is_some(), "{l}");
}

#[test]
fn a_client_that_leaves_the_queue_is_client_closed() {
    let (_dir, path, top) = log_file("alog-left");
    let p = Proxy::start(&one_section(&top, ""));
    let request: &[u8] = b"GET /gave-up HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let mut s = connect(p.client_addr());
    s.write_all(request).expect("send");
    // No backend: the request waits in the queue until the client leaves.
    thread::sleep(Duration::from_millis(300));
    drop(s);

    let e = &wait_entries(&path, 1)[0];
    let l = &e.line;
    assert_eq!(e.termination, "client_closed", "{l}");
    assert_eq!(e.status, None, "no response was sent: {l}");
    assert_eq!(e.bytes_out, 0, "{l}");
    assert_eq!(e.bytes_in, request.len() as u64, "{l}");
    assert_eq!(e.request.raw, "GET /gave-up HTTP/1.1", "{l}");
    assert_eq!(e.section, "app.test", "{l}");
    assert_eq!(e.backend, "-", "{l}");
    assert_eq!(e.backend_ms, None, "{l}");
    assert!(e.total_ms >= 250.0, "{l}");
    // It queued for 300 ms: WAIT_MS is `-` only for a request that never
    // queued (docs/operations.md, src/access_log.rs).
    let wait = e
        .wait_ms
        .unwrap_or_else(|| panic!("WAIT_MS is `-` for a request that queued for 300 ms: {l}"));
    assert!(wait >= 250.0 && wait <= e.total_ms, "{l}");
}

#[test]
fn the_health_check_and_the_status_page_are_local_and_a_docroot_file_is_static() {
    let (dir, path, top) = log_file("alog-local");
    let root = dir.path.join("root");
    fs::create_dir(&root).expect("docroot");
    fs::write(root.join("hello.txt"), "static hello\n").expect("file");
    let p = Proxy::start(&one_section(
        &format!("{top}\nstatus_uri: /status"),
        &format!("docroot: {}", root.display()),
    ));

    let health: &[u8] =
        b"GET /swiftiply_health HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let got_health = exchange(p.client_addr(), health);
    assert_eq!(status_of(&got_health), 200);
    let file: &[u8] = b"GET /hello.txt HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let got_file = exchange(p.client_addr(), file);
    assert_eq!(status_of(&got_file), 200);
    assert!(got_file.ends_with(b"\r\n\r\nstatic hello\n"));
    let status: &[u8] = b"GET /status HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let got_status = exchange(p.client_addr(), status);
    assert_eq!(status_of(&got_status), 200);

    let entries = wait_entries(&path, 3);
    let e = entry_ending(&entries, "static");
    assert_eq!(e.request.raw, "GET /hello.txt HTTP/1.1", "{}", e.line);
    assert_eq!(e.status, Some(200), "{}", e.line);
    assert_eq!(e.section, "app.test", "{}", e.line);
    assert_eq!(e.bytes_out, got_file.len() as u64, "{}", e.line);
    assert_eq!(e.bytes_in, file.len() as u64, "{}", e.line);
    assert_no_backend(e);

    let local: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.termination == "local")
        .collect();
    assert_eq!(local.len(), 2, "{entries:#?}");
    for (e, request, got) in [
        (local[0], health, &got_health),
        (local[1], status, &got_status),
    ] {
        let line = String::from_utf8_lossy(request);
        let request_line = line.split("\r\n").next().expect("a request line");
        assert_eq!(e.request.raw, request_line, "{}", e.line);
        assert_eq!(e.status, Some(200), "{}", e.line);
        assert_eq!(e.section, "-", "answered before any routing: {}", e.line);
        assert_eq!(e.bytes_out, got.len() as u64, "{}", e.line);
        assert_eq!(e.bytes_in, request.len() as u64, "{}", e.line);
        assert_no_backend(e);
    }
}

#[test]
fn a_backend_silent_past_backend_timeout_is_a_504_backend_timeout() {
    let (_dir, path, top) = log_file("alog-btimeout");
    let p = Proxy::start(&one_section(&format!("{top}\nbackend_timeout: 1"), ""));
    let id = id12("alogsilent", 1);
    let mut b = Backend::connect(p.backend_addr(0), &id, "");
    let request: &[u8] = b"GET /silent HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let got = exchange(p.client_addr(), request);
    assert_eq!(status_of(&got), 504, "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(b.expect_request().target, "/silent");

    let e = &wait_entries(&path, 1)[0];
    let l = &e.line;
    assert_eq!(e.termination, "backend_timeout", "{l}");
    assert_eq!(e.status, Some(504), "{l}");
    assert_eq!(e.section, "app.test", "{l}");
    assert_eq!(e.backend, id, "the backend that went silent: {l}");
    assert!(e.wait_ms.is_some(), "{l}");
    assert!(e.total_ms >= 900.0, "{l}");
    assert_eq!(e.bytes_out, got.len() as u64, "{l}");
    assert_eq!(e.bytes_in, request.len() as u64, "{l}");
}

#[test]
fn a_redeployed_request_has_one_line_naming_the_backend_that_answered() {
    let (_dir, path, top) = log_file("alog-redeploy");
    let p = Proxy::start(&one_section(&top, "redeployable: true"));
    let dying = Backend::connect(p.backend_addr(0), &id12("alogdies", 1), "");
    wait_joined(&p, 1);
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /again HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(dying.die_after_request().target, "/again");
    let id = id12("alogsaves", 1);
    let mut saver = Backend::connect(p.backend_addr(0), &id, "");
    let req = saver.expect_request();
    saver.respond_echo(&req);
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");

    let e = &wait_entries(&path, 1)[0];
    let l = &e.line;
    assert_eq!(e.termination, "ok", "{l}");
    assert_eq!(e.backend, id, "{l}");
    assert_eq!(e.bytes_out, wire_len(&r), "{l}");
    assert!(e.wait_ms.is_some() && e.backend_ms.is_some(), "{l}");
}

#[test]
fn pipelined_requests_each_count_only_their_own_bytes() {
    let (_dir, path, top) = log_file("alog-pipeline");
    let p = Proxy::start(&one_section(&top, ""));
    let _farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    wait_joined(&p, 1);

    let first: &[u8] = b"GET /p1 HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let second: &[u8] = b"GET /p2-longer HTTP/1.1\r\nHost: app.test\r\nX-Pad: 0123456789\r\n\r\n";
    let mut c = Client::connect(p.client_addr());
    c.send(&[first, second].concat());
    let r1 = c.read_response(false);
    let r2 = c.read_response(false);
    assert_eq!((r1.status, r2.status), (200, 200));
    assert!(r2.body_contains("GET /p2-longer "), "{r2:?}");

    let entries = wait_entries(&path, 2);
    let (e1, e2) = (&entries[0], &entries[1]);
    assert_eq!(e1.request.raw, "GET /p1 HTTP/1.1", "{}", e1.line);
    assert_eq!(e2.request.raw, "GET /p2-longer HTTP/1.1", "{}", e2.line);
    assert_eq!(e1.bytes_out, wire_len(&r1), "{}", e1.line);
    assert_eq!(e2.bytes_out, wire_len(&r2), "{}", e2.line);
    assert_eq!(
        e1.bytes_in + e2.bytes_in,
        (first.len() + second.len()) as u64,
        "{}\n{}",
        e1.line,
        e2.line
    );
    assert_eq!(
        (e1.bytes_in, e2.bytes_in),
        (first.len() as u64, second.len() as u64),
        "each request's own bytes (the second was read ahead with the first):\n{}\n{}",
        e1.line,
        e2.line
    );
}

#[test]
fn large_bodies_relayed_with_splice_and_sent_with_sendfile_are_counted_to_the_byte() {
    let (dir, path, top) = log_file("alog-large");
    let root = dir.path.join("root");
    fs::create_dir(&root).expect("docroot");
    let file_body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(root.join("big.bin"), &file_body).expect("file");
    let p = Proxy::start(&one_section(&top, &format!("docroot: {}", root.display())));
    let id = id12("aloglarge", 1);
    let mut b = Backend::connect(p.backend_addr(0), &id, "");
    let backend = thread::spawn(move || {
        b.expect_request();
        let body = vec![b'z'; 1 << 20];
        b.respond("200 OK", &[], &body);
    });
    let proxied: &[u8] = b"GET /big HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let got_proxied = exchange(p.client_addr(), proxied);
    join_within(backend, T, "backend");
    assert_eq!(status_of(&got_proxied), 200);
    assert!(got_proxied.len() > 1 << 20);
    let file: &[u8] = b"GET /big.bin HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let got_file = exchange(p.client_addr(), file);
    assert_eq!(status_of(&got_file), 200);
    assert!(got_file.ends_with(&file_body));

    let entries = wait_entries(&path, 2);
    let e = entry_ending(&entries, "ok");
    assert_eq!(e.bytes_out, got_proxied.len() as u64, "{}", e.line);
    assert_eq!(e.backend, id, "{}", e.line);
    let e = entry_ending(&entries, "static");
    assert_eq!(e.bytes_out, got_file.len() as u64, "{}", e.line);
}

// ---------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------

#[test]
fn quotes_backslashes_and_non_ascii_bytes_from_a_client_are_escaped_on_one_line() {
    let (_dir, path, top) = log_file("alog-escape");
    let p = Proxy::start(&one_section(&top, ""));
    let farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    wait_joined(&p, 1);

    // Control bytes other than a tab are refused by the request parser
    // (a 400), so the tab and bytes from 0x80 stand for them here.
    let agent: &[u8] = b"evil \"agent\" \\ tab\there \xc3\xa9t\xc3\xa9";
    let referer: &[u8] = b"x\" 200 1 \"forged\" \"-";
    let mut request = b"GET /esc HTTP/1.1\r\nHost: app.test\r\nUser-Agent: ".to_vec();
    request.extend_from_slice(agent);
    request.extend_from_slice(b"\r\nReferer: ");
    request.extend_from_slice(referer);
    request.extend_from_slice(b"\r\n\r\n");
    let mut c = Client::connect(p.client_addr());
    let r = c.request(&request);
    assert_eq!(r.status, 200, "{r:?}");

    let e = &wait_entries(&path, 1)[0];
    let l = &e.line;
    assert_eq!(
        e.user_agent.raw, "evil \\\"agent\\\" \\\\ tab\\x09here \\xc3\\xa9t\\xc3\\xa9",
        "{l}"
    );
    assert_eq!(e.user_agent.bytes, agent, "{l}");
    assert_eq!(e.referer.raw, "x\\\" 200 1 \\\"forged\\\" \\\"-", "{l}");
    assert_eq!(e.referer.bytes, referer, "{l}");
    // The fields after the forged-looking ones are the real ones.
    assert_eq!(e.section, "app.test", "{l}");
    assert_eq!(e.backend, farm.ids[0], "{l}");
    assert_eq!(e.bytes_in, request.len() as u64, "{l}");
    assert_eq!(e.bytes_out, wire_len(&r), "{l}");
    assert_eq!(e.termination, "ok", "{l}");
}

// ---------------------------------------------------------------------------
// Where the lines go
// ---------------------------------------------------------------------------

fn get_ok(p: &Proxy, target: &str) {
    let r = get_once(p.client_addr(), "app.test", target);
    assert_eq!(r.status, 200, "{target}: {r:?}");
}

fn targets(entries: &[Entry]) -> Vec<String> {
    entries.iter().map(|e| e.request.raw.clone()).collect()
}

#[test]
fn sigusr1_reopens_the_path_after_a_rename_and_no_line_is_lost() {
    let (dir, path, top) = log_file("alog-rotate");
    let rotated = dir.path.join("access.log.1");
    let p = Proxy::start(&one_section(&top, ""));
    let _farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    wait_joined(&p, 1);

    for i in 0..3 {
        get_ok(&p, &format!("/before{i}"));
    }
    wait_entries(&path, 3);
    fs::rename(&path, &rotated).expect("rotate");
    // Until the signal, lines still go to the renamed file.
    get_ok(&p, "/between");
    wait_entries(&rotated, 4);

    p.signal(libc::SIGUSR1);
    assert!(
        p.wait_for_log("SIGUSR1: reopening the access log", T),
        "{}",
        p.stderr_text()
    );
    // The worker has reopened once the path exists again.
    assert!(
        eventually(T, || path.exists()),
        "{} was not created again; stderr:\n{}",
        path.display(),
        p.stderr_text()
    );
    for i in 0..2 {
        get_ok(&p, &format!("/after{i}"));
    }
    let new = wait_entries(&path, 2);
    assert_eq!(
        targets(&new),
        ["GET /after0 HTTP/1.1", "GET /after1 HTTP/1.1"]
    );
    let old = wait_entries(&rotated, 4);
    assert_eq!(
        targets(&old),
        [
            "GET /before0 HTTP/1.1",
            "GET /before1 HTTP/1.1",
            "GET /before2 HTTP/1.1",
            "GET /between HTTP/1.1"
        ]
    );
}

#[test]
fn access_log_stderr_writes_whole_lines_among_the_log_messages() {
    let p = Proxy::start(&one_section("access_log: stderr", ""));
    let farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    wait_joined(&p, 1);
    get_ok(&p, "/to-stderr");
    let r = get_once(p.client_addr(), "app.test", "/swiftiply_health");
    assert_eq!(r.status, 200);

    let access_lines = || -> Vec<String> {
        p.stderr_text()
            .lines()
            .filter(|l| l.starts_with("127.0.0.1 - - ["))
            .map(str::to_string)
            .collect()
    };
    assert!(
        eventually(T, || access_lines().len() >= 2),
        "no access lines on stderr:\n{}",
        p.stderr_text()
    );
    let lines = access_lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let entries: Vec<Entry> = lines.iter().map(|l| parse_or_panic(l)).collect();
    let e = entry_ending(&entries, "ok");
    assert_eq!(e.request.raw, "GET /to-stderr HTTP/1.1", "{}", e.line);
    assert_eq!(e.backend, farm.ids[0], "{}", e.line);
    let e = entry_ending(&entries, "local");
    assert_eq!(
        e.request.raw, "GET /swiftiply_health HTTP/1.1",
        "{}",
        e.line
    );
}

#[test]
fn two_workers_write_forty_whole_lines_without_interleaving() {
    let (_dir, path, top) = log_file("alog-workers");
    let p = Proxy::start(&one_section(&format!("{top}\nworkers: 2"), ""));
    let _farm = EchoFarm::start(p.backend_addr(0), "", 2, false);
    wait_joined(&p, 2);

    // Long user agents make each write large enough that a split one would
    // show.
    let agent = "a".repeat(2000);
    let mut clients: Vec<Client> = (0..40).map(|_| Client::connect(p.client_addr())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(
            format!("GET /r{i} HTTP/1.1\r\nHost: app.test\r\nUser-Agent: {i}-{agent}\r\n\r\n")
                .as_bytes(),
        );
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let r = c.read_response(false);
        assert_eq!(r.status, 200, "request {i}: {r:?}");
    }

    let entries = wait_entries(&path, 40);
    let mut seen: Vec<String> = targets(&entries);
    seen.sort();
    let mut expected: Vec<String> = (0..40).map(|i| format!("GET /r{i} HTTP/1.1")).collect();
    expected.sort();
    assert_eq!(seen, expected);
    for e in &entries {
        let i = e.request.raw["GET /r".len()..]
            .split(' ')
            .next()
            .expect("i");
        assert_eq!(e.user_agent.raw, format!("{i}-{agent}"), "{}", e.line);
        assert_eq!(e.termination, "ok", "{}", e.line);
    }
}

#[test]
fn a_reload_that_changes_the_path_sends_later_lines_to_the_new_file() {
    let (dir, path, top) = log_file("alog-reload");
    let new_path = dir.path.join("other.log");
    let p = Proxy::start(&one_section(&top, ""));
    let app = p.backend_addr(0);
    let _farm = EchoFarm::start(app, "", 1, false);
    wait_joined(&p, 1);
    get_ok(&p, "/old");
    wait_entries(&path, 1);

    p.reload(&config(
        &format!("access_log: {}", new_path.display()),
        &[&format!(
            "incoming: app.test\noutgoing: {app}\ndefault: true"
        )],
    ))
    .expect("the reload is accepted");
    assert!(
        eventually(T, || new_path.exists()),
        "{} was not created; stderr:\n{}",
        new_path.display(),
        p.stderr_text()
    );
    get_ok(&p, "/new");
    let new = wait_entries(&new_path, 1);
    assert_eq!(targets(&new), ["GET /new HTTP/1.1"]);
    let old = wait_entries(&path, 1);
    assert_eq!(targets(&old), ["GET /old HTTP/1.1"]);
}

#[test]
fn a_path_that_cannot_be_opened_stops_the_start_with_a_message_naming_it() {
    let dir = TempDir::new("alog-missing");
    let path = dir.path.join("no-such-dir").join("access.log");
    let err = match Proxy::try_start(&one_section(&format!("access_log: {}", path.display()), "")) {
        Ok(_) => panic!("the proxy started with access_log in a missing directory"),
        Err(e) => e,
    };
    assert!(err.starts_with("swiftiply exited early"), "{err}");
    // The error also quotes the config; look at what the proxy printed.
    let (_, stderr) = err.split_once("\nstderr:\n").expect("the proxy's stderr");
    assert!(
        stderr.contains(&path.display().to_string()),
        "the message does not name {}:\n{stderr}",
        path.display()
    );
    assert!(stderr.contains("No such file or directory"), "{stderr}");
}

// ---------------------------------------------------------------------------
// Responses the client did not take in full
// ---------------------------------------------------------------------------

/// A docroot with one 30 MB file: far more than socket buffers hold.
fn big_file_proxy(tag: &str) -> (TempDir, PathBuf, Proxy, usize) {
    let (dir, path, top) = log_file(tag);
    let root = dir.path.join("root");
    fs::create_dir(&root).expect("docroot");
    let len = 30 * 1024 * 1024;
    fs::write(root.join("big.bin"), vec![b'x'; len]).expect("file");
    let p = Proxy::start(&one_section(
        &format!("{top}\nbackend_timeout: 1"),
        &format!("docroot: {}", root.display()),
    ));
    (dir, path, p, len)
}

#[test]
fn a_file_the_client_stops_reading_is_a_client_timeout_not_static() {
    let (_dir, path, p, len) = big_file_proxy("alog-stall");
    let mut s = connect(p.client_addr());
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .expect("send");
    // Never read: after backend_timeout without progress the proxy gives up.
    let e = &wait_entries(&path, 1)[0];
    let l = &e.line;
    assert_eq!(e.termination, "client_timeout", "{l}");
    assert_eq!(e.status, Some(200), "{l}");
    assert!(e.bytes_out > 0 && e.bytes_out < len as u64, "{l}");
    drop(s);
}

#[test]
fn a_file_the_client_closes_part_way_counts_what_it_was_sent() {
    let (_dir, path, p, len) = big_file_proxy("alog-part");
    let mut s = connect(p.client_addr());
    s.write_all(b"GET /big.bin HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .expect("send");
    let mut got = 0;
    let mut buf = [0u8; 64 * 1024];
    while got < 1_000_000 {
        match s.read(&mut buf) {
            Ok(0) => panic!("closed by the proxy after {got} bytes"),
            Ok(n) => got += n,
            Err(e) => panic!("read: {e}"),
        }
    }
    drop(s);
    let e = &wait_entries(&path, 1)[0];
    let l = &e.line;
    assert_eq!(e.termination, "client_closed", "{l}");
    // At least what this client read; less than the whole file.
    assert!(e.bytes_out >= got as u64 && e.bytes_out < len as u64, "{l}");
}

#[test]
fn the_last_lines_are_written_when_the_proxy_stops() {
    let (_dir, path, top) = log_file("alog-stop");
    let mut p = Proxy::start(&one_section(&top, ""));
    let _farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    wait_joined(&p, 1);
    for i in 0..5 {
        get_ok(&p, &format!("/before-stop-{i}"));
    }
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(T).expect("the proxy stops");
    assert_eq!(status.code(), Some(0));
    // Read once, after the exit: nothing may be left unwritten.
    let lines = complete_lines(&path).expect("whole lines");
    assert_eq!(lines.len(), 5, "{lines:#?}");
}
