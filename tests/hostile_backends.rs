//! Hostile backends (docs/protocol.md#backend-failures): a backend that answers with something it
//! must not — a broken status line, conflicting framing, a bad chunk or
//! packet length, a head that never ends, bytes nobody asked for — is
//! closed, and the client it was serving gets a 502 (no response byte had
//! reached it) or a cut connection (the response had started; a chunked one
//! is left unterminated).
//!
//! Every hostile byte string carries `MARKER`; no client may ever receive
//! it, because nothing a backend sends past the point where it went wrong is
//! forwarded. Each attack runs next to a well-behaved echo backend in the
//! same section, which must serve a request in flight during the attack and
//! a request after it, as if nothing had happened.

mod common;

use common::*;
use std::io::{self, Read};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// Inside every hostile byte string; must never reach a client.
const MARKER: &str = "HOSTILE-MARKER";
const T: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// The attacks
// ---------------------------------------------------------------------------

/// What the client of the attacked request must see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Nothing had reached it: the proxy's own 502, then the connection
    /// closes.
    BadGateway,
    /// The response had started: the connection closes before the response
    /// is complete.
    Cut,
}

/// One hostile answer to a request.
struct Attack {
    name: &'static str,
    /// A well-formed start the client receives before the attack (the head
    /// and a first chunk, say); empty for none.
    opening: Vec<u8>,
    /// The client has this much of `opening` before the attack goes on.
    opening_seen: &'static str,
    /// The hostile bytes.
    hostile: Vec<u8>,
    /// The backend closes its end after `hostile`; otherwise it waits for
    /// the proxy to close the connection.
    then_close: bool,
    outcome: Outcome,
    /// What the proxy's log line about the backend leaving must say.
    reason: &'static str,
}

impl Attack {
    /// Hostile bytes where the response head should be: a 502.
    fn head(name: &'static str, hostile: impl Into<Vec<u8>>, reason: &'static str) -> Attack {
        Attack {
            name,
            opening: Vec::new(),
            opening_seen: "",
            hostile: hostile.into(),
            then_close: false,
            outcome: Outcome::BadGateway,
            reason,
        }
    }

    /// A sound `opening` reaches the client, then the hostile bytes: a cut.
    fn mid_body(
        name: &'static str,
        opening: &[u8],
        opening_seen: &'static str,
        hostile: impl Into<Vec<u8>>,
        reason: &'static str,
    ) -> Attack {
        Attack {
            name,
            opening: opening.to_vec(),
            opening_seen,
            hostile: hostile.into(),
            then_close: false,
            outcome: Outcome::Cut,
            reason,
        }
    }

    /// The backend closes its connection after the hostile bytes.
    fn then_close(mut self) -> Attack {
        self.then_close = true;
        self
    }
}

fn bytes(s: &str) -> Vec<u8> {
    s.replace("{M}", MARKER).into_bytes()
}

const MALFORMED: &str = "bad response: malformed response head";
const BAD_LENGTH: &str = "bad response: invalid or conflicting Content-Length";

fn malformed_status_lines() -> Vec<Attack> {
    let mut garbage: Vec<u8> = (0u8..=255).rev().collect();
    garbage.extend_from_slice(MARKER.as_bytes());
    garbage.extend_from_slice(b"\r\n\r\n");
    vec![
        Attack::head(
            "a status code with a letter in it",
            bytes("HTTP/1.1 2x0 OK\r\nContent-Length: 14\r\n\r\n{M}"),
            MALFORMED,
        ),
        Attack::head(
            "a protocol name that is not HTTP",
            bytes("HTTX/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{M}"),
            MALFORMED,
        ),
        Attack::head(
            "a status line ended by a bare CR",
            bytes("HTTP/1.1 200 OK\rX-{M}: 1\r\nContent-Length: 0\r\n\r\n"),
            MALFORMED,
        ),
        Attack::head(
            "a status line with no line end, then the backend closes",
            bytes("HTTP/1.1 200 {M}"),
            "closed before its response was complete",
        )
        .then_close(),
        Attack::head("binary garbage", garbage, MALFORMED),
        Attack::head(
            "a folded header line",
            bytes("HTTP/1.1 200 OK\r\nX-A: 1\r\n X-{M}: 2\r\nContent-Length: 0\r\n\r\n"),
            MALFORMED,
        ),
        // The proxy cannot relay a switch to another protocol.
        Attack::head(
            "101 Switching Protocols",
            bytes(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n{M}",
            ),
            "bad response: 101 Switching Protocols is not supported",
        ),
    ]
}

fn conflicting_framing() -> Vec<Attack> {
    vec![
        Attack::head(
            "both Content-Length and Transfer-Encoding",
            bytes(
                "HTTP/1.1 200 OK\r\nContent-Length: 14\r\nTransfer-Encoding: chunked\r\n\r\n\
                 e\r\n{M}\r\n0\r\n\r\n",
            ),
            "bad response: both Content-Length and Transfer-Encoding",
        ),
        Attack::head(
            "a negative Content-Length",
            bytes("HTTP/1.1 200 OK\r\nContent-Length: -14\r\n\r\n{M}"),
            BAD_LENGTH,
        ),
        Attack::head(
            "an overflowing Content-Length",
            bytes("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n{M}"),
            BAD_LENGTH,
        ),
        Attack::head(
            "two differing Content-Length headers",
            bytes("HTTP/1.1 200 OK\r\nContent-Length: 14\r\nContent-Length: 4\r\n\r\n{M}"),
            BAD_LENGTH,
        ),
        Attack::head(
            "more Connection headers than the proxy can remove",
            bytes(&format!(
                "HTTP/1.1 200 OK\r\n{}Content-Length: 14\r\n\r\n{{M}}",
                "Connection: keep-alive\r\n".repeat(20)
            )),
            "bad response: too many Connection, Keep-Alive or framing headers",
        ),
    ]
}

const CHUNKED_OPENING: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n";
const PACKET_OPENING: &[u8] = b"HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\n\r\n00000005hello";

fn bad_body_framing() -> Vec<Attack> {
    vec![
        Attack::mid_body(
            "a chunk size that is not hex",
            CHUNKED_OPENING,
            "hello",
            bytes("zz\r\n{M}\r\n0\r\n\r\n"),
            "chunk size",
        ),
        Attack::mid_body(
            "a chunk size that overflows",
            CHUNKED_OPENING,
            "hello",
            bytes("1000000000000000e\r\n{M}\r\n0\r\n\r\n"),
            "chunk size",
        ),
        Attack::mid_body(
            "chunk data not followed by CRLF",
            CHUNKED_OPENING,
            "hello",
            bytes("5\r\nworld{M}\r\n0\r\n\r\n"),
            "chunk",
        ),
        Attack::mid_body(
            "a packet length with a non-digit",
            PACKET_OPENING,
            "hello",
            bytes("0000x014{M}--------"),
            "packet length",
        ),
        Attack::mid_body(
            "a packet length padded with spaces",
            PACKET_OPENING,
            "hello",
            bytes("      14{M}--------"),
            "packet length",
        ),
        Attack::mid_body(
            "a body that stops half-way, then the backend closes",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nthe first 26 of 1000 bytes",
            "the first 26 of 1000 bytes",
            Vec::new(),
            "closed before its response was complete",
        )
        .then_close(),
    ]
}

fn oversized_heads() -> Vec<Attack> {
    // One endless header line: the head outgrows any buffer.
    let mut long_line = bytes("HTTP/1.1 200 OK\r\nX-{M}: ");
    long_line.resize(1 << 20, b'a');
    // A megabyte of short header lines that never reaches its blank line.
    let mut many_lines = bytes("HTTP/1.1 200 OK\r\n");
    let mut n = 0;
    while many_lines.len() < 1 << 20 {
        many_lines.extend_from_slice(format!("X-{MARKER}-{n}: aaaaaaaa\r\n").as_bytes());
        n += 1;
    }
    vec![
        Attack::head(
            "a 1 MiB header line",
            long_line,
            "bad response: response head larger than the buffer",
        ),
        Attack::head(
            "1 MiB of header lines with no end",
            many_lines,
            "bad response",
        ),
    ]
}

// ---------------------------------------------------------------------------
// What a client received, byte for byte
// ---------------------------------------------------------------------------

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn has_marker(b: &[u8]) -> bool {
    find(b, MARKER.as_bytes()).is_some()
}

/// Appends what arrives on `s` to `got` until `done(got)` holds (true) or
/// the connection ends or `timeout` passes (false).
fn receive_until(
    s: &mut TcpStream,
    got: &mut Vec<u8>,
    timeout: Duration,
    done: impl Fn(&[u8]) -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 16384];
    while !done(got) {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ = s.set_read_timeout(Some(deadline - now));
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// One response as the client received it.
#[derive(Debug)]
struct Received {
    status: u16,
    head: String,
    /// Where the response ends, if its framing says it did.
    end: Option<usize>,
}

impl Received {
    fn parse(raw: &[u8]) -> Option<Received> {
        let head_len = find(raw, b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&raw[..head_len]).into_owned();
        let status = head.split(' ').nth(1)?.parse().ok()?;
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let body = &raw[head_len..];
        let body_end = if header("transfer-encoding").is_some_and(|v| v == "chunked") {
            chunked_end(body)
        } else {
            let n: usize = header("content-length")?.parse().ok()?;
            (body.len() >= n).then_some(n)
        };
        Some(Received {
            status,
            end: body_end.map(|e| head_len + e),
            head,
        })
    }

    fn says_close(&self) -> bool {
        self.head
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n")
    }
}

/// Where a chunked body ends (past its last chunk and trailers), if it does.
fn chunked_end(body: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let eol = at + find(&body[at..], b"\r\n")?;
        let line = std::str::from_utf8(&body[at..eol]).ok()?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        at = eol + 2;
        if size == 0 {
            loop {
                let eol = at + find(&body[at..], b"\r\n")?;
                let blank = eol == at;
                at = eol + 2;
                if blank {
                    return Some(at);
                }
            }
        }
        at += size;
        if body.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
}

// ---------------------------------------------------------------------------
// Running one attack
// ---------------------------------------------------------------------------

/// The healthy side of every scenario: an echo backend, and a request that
/// it is still answering while the attack happens (`sleep=250`).
struct Bystander {
    farm: EchoFarm,
    during: thread::JoinHandle<Response>,
}

impl Bystander {
    fn start(p: &Proxy) -> Bystander {
        let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
        let addr = p.client_addr();
        let during = thread::spawn(move || get_once(addr, "app.test", "/sleep=250/during"));
        assert!(
            farm.wait_for(T, |s| s.target.contains("/during")),
            "the healthy backend never got the concurrent request"
        );
        Bystander { farm, during }
    }

    fn id(&self) -> &str {
        &self.farm.ids[0]
    }

    /// The request in flight during the attack, and one after it, are
    /// served whole by the healthy backend.
    fn check(self, p: &Proxy, what: &str) {
        let id = &self.farm.ids[0];
        let r = join_within(self.during, T, "the concurrent request");
        assert_served(&r, id, "/sleep=250/during", what);
        let r = get_once(p.client_addr(), "app.test", "/after");
        assert_served(&r, id, "/after", what);
    }
}

fn assert_served(r: &Response, backend: &str, target: &str, what: &str) {
    assert_eq!(r.status, 200, "{what}: a healthy request failed: {r:?}");
    assert_eq!(r.header("x-backend"), Some(backend), "{what}: {r:?}");
    assert!(
        r.body_contains(&format!("GET {target} HTTP/1.1\r\n")),
        "{what}: another request's response: {r:?}"
    );
    assert!(
        !has_marker(&r.raw_head) && !has_marker(&r.body),
        "{what}: hostile bytes reached a healthy client: {r:?}"
    );
}

/// The proxy logged the backend leaving, and why.
fn assert_logged(p: &Proxy, backend: &str, reason: &str, what: &str) {
    let left = format!("backend {backend} left section app.test");
    assert!(
        p.wait_for_log(&left, T),
        "{what}: no `{left}` line:\n{}",
        p.stderr_text()
    );
    let text = p.stderr_text();
    let line = text.lines().find(|l| l.contains(&left)).unwrap_or("");
    assert!(
        line.contains(reason),
        "{what}: the log line does not say `{reason}`: {line}"
    );
}

fn attacked_request(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: app.test\r\n\r\n").into_bytes()
}

/// Runs `a` in a fresh proxy; in a `redeployable` section an attack that
/// came before any response byte must not reach the client at all.
fn run(a: &Attack, redeployable: bool) {
    let what = format!(
        "{} ({})",
        a.name,
        if redeployable {
            "redeployable"
        } else {
            "not redeployable"
        }
    );
    let section = if redeployable {
        "redeployable: true"
    } else {
        ""
    };
    let mut p = Proxy::start(&one_section("backend_timeout: 4", section));
    let hostile_id = id12("hostile", 1);
    let mut hostile = Backend::connect(p.backend_addr(0), &hostile_id, "");
    // The hostile backend is the only one: the attacked request is its.
    let mut victim = Client::connect(p.client_addr());
    victim.send(&attacked_request("/attack"));
    assert_eq!(hostile.expect_request().target, "/attack", "{what}");
    let bystander = Bystander::start(&p);

    let mut got = Vec::new();
    if !a.opening.is_empty() {
        hostile.write(&a.opening);
        let seen = a.opening_seen.as_bytes();
        assert!(
            receive_until(&mut victim.conn.stream, &mut got, T, |g| find(g, seen)
                .is_some()),
            "{what}: the sound start of the response did not reach the client: {:?}",
            String::from_utf8_lossy(&got)
        );
    }
    // The proxy may close the connection before it has read everything.
    let _ = hostile.conn.write_all(&a.hostile);
    if a.then_close {
        drop(hostile);
    } else {
        assert!(
            hostile.is_closed(T),
            "{what}: the proxy kept the hostile backend's connection"
        );
    }

    let redeployed = redeployable && a.outcome == Outcome::BadGateway;
    let ended = if redeployed {
        receive_until(&mut victim.conn.stream, &mut got, T, |g| {
            Received::parse(g).is_some_and(|r| r.end.is_some())
        })
    } else {
        receive_to_close(&mut victim.conn.stream, &mut got, T)
    };
    let shown = String::from_utf8_lossy(&got);
    assert!(
        !has_marker(&got),
        "{what}: hostile bytes reached the client: {shown:?}"
    );
    assert!(
        ended,
        "{what}: the client neither got its answer nor a closed connection: {shown:?}"
    );
    let r = Received::parse(&got);
    match (a.outcome, redeployed) {
        (Outcome::BadGateway, false) => {
            let r = r.unwrap_or_else(|| panic!("{what}: no response, just a close: {shown:?}"));
            assert_eq!(r.status, 502, "{what}: {shown:?}");
            assert_eq!(r.end, Some(got.len()), "{what}: {shown:?}");
            assert!(r.says_close(), "{what}: a 502 without `Connection: close`");
        }
        (Outcome::BadGateway, true) => {
            // Nothing of the hostile answer had been sent: the request went
            // to the healthy backend instead.
            let r = r.unwrap_or_else(|| panic!("{what}: {shown:?}"));
            assert_eq!(r.status, 200, "{what}: not redeployed: {shown:?}");
            assert!(r.head.contains(bystander.id()), "{what}: {shown:?}");
            assert!(
                find(&got, &attacked_request("/attack")).is_some(),
                "{what}: {shown:?}"
            );
        }
        (Outcome::Cut, _) => {
            let r = r.unwrap_or_else(|| panic!("{what}: the head never arrived: {shown:?}"));
            assert_eq!(r.status, 200, "{what}: {shown:?}");
            assert_eq!(
                r.end, None,
                "{what}: a cut response looks complete to the client: {shown:?}"
            );
            assert!(
                !got.ends_with(b"\r\n0\r\n\r\n"),
                "{what}: a cut chunked response was terminated: {shown:?}"
            );
        }
    }

    bystander.check(&p, &what);
    assert_logged(&p, &hostile_id, a.reason, &what);
    p.assert_alive();
}

/// Runs every attack in both kinds of section; one failing case does not
/// hide the others.
fn run_all(attacks: &[Attack]) {
    let mut failed = Vec::new();
    for a in attacks {
        for redeployable in [false, true] {
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(a, redeployable)));
            if ran.is_err() {
                failed.push(format!("{} (redeployable: {redeployable})", a.name));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "failed cases (each one's message is above):\n{}",
        failed.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Hostile answers to a request
// ---------------------------------------------------------------------------

#[test]
fn a_malformed_status_line_is_a_502() {
    run_all(&malformed_status_lines());
}

#[test]
fn conflicting_or_impossible_framing_is_a_502() {
    run_all(&conflicting_framing());
}

#[test]
fn a_bad_chunk_or_packet_length_cuts_the_client_unterminated() {
    run_all(&bad_body_framing());
}

#[test]
fn a_head_that_never_ends_is_a_502() {
    run_all(&oversized_heads());
}

// ---------------------------------------------------------------------------
// Bytes nobody asked for
// ---------------------------------------------------------------------------

/// An idle backend that speaks first is closed, and what it sent goes
/// nowhere: every request goes to the healthy backend.
#[test]
fn bytes_from_an_idle_backend_close_it_and_reach_nobody() {
    let mut garbage: Vec<u8> = (0u8..=255).collect();
    garbage.extend_from_slice(MARKER.as_bytes());
    let unasked: &[(&str, Vec<u8>)] = &[
        ("binary garbage", garbage),
        (
            "a whole response to a request it never got",
            bytes("HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{M}"),
        ),
    ];
    for (name, sent) in unasked {
        let mut p = Proxy::start(&one_section("", ""));
        // The healthy backend is busy when the hostile one joins: the
        // hostile one is the only idle backend when it speaks.
        let bystander = Bystander::start(&p);
        let hostile_id = id12("idle", 1);
        let mut hostile = Backend::connect(p.backend_addr(0), &hostile_id, "");
        assert!(
            p.wait_for_log(&format!("backend {hostile_id} joined"), T),
            "{name}"
        );
        hostile.write(sent);
        assert!(
            hostile.is_closed(T),
            "{name}: the proxy kept a backend that spoke while idle"
        );
        for i in 0..3 {
            let r = get_once(p.client_addr(), "app.test", &format!("/next{i}"));
            assert_served(&r, bystander.id(), &format!("/next{i}"), name);
        }
        bystander.check(&p, name);
        assert_logged(&p, &hostile_id, "sent bytes while idle", name);
        p.assert_alive();
    }
}

/// A response that comes in the same packet as the handshake answers no
/// request, not even the one that was waiting for a backend at that moment.
#[test]
fn a_response_sent_with_the_handshake_answers_no_one() {
    let mut p = Proxy::start(&one_section("", ""));
    // A request waits: there is no backend yet.
    let mut waiting = Client::connect(p.client_addr());
    waiting.send(&attacked_request("/waiting"));
    thread::sleep(Duration::from_millis(100));

    let hostile_id = id12("eager", 1);
    let mut preamble = handshake_bytes(&hostile_id, "");
    preamble.extend_from_slice(&bytes("HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{M}"));
    let mut hostile = Backend::connect_raw(p.backend_addr(0), &hostile_id, &preamble);
    assert!(
        hostile.is_closed(T),
        "the proxy kept a backend that answered before it was asked"
    );
    // Refused at the default log level, with the reason.
    assert!(
        p.wait_for_log("refused a backend handshake from 127.0.0.1", T)
            && p.wait_for_log("sent bytes after its handshake, before any request", T),
        "no reason logged:\n{}",
        p.stderr_text()
    );

    // The waiting request is served by the next, healthy backend.
    let farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut got = Vec::new();
    assert!(
        receive_until(&mut waiting.conn.stream, &mut got, T, |g| {
            Received::parse(g).is_some_and(|r| r.end.is_some())
        }),
        "the waiting request was not answered: {:?}",
        String::from_utf8_lossy(&got)
    );
    let shown = String::from_utf8_lossy(&got);
    assert!(
        !has_marker(&got),
        "the early response was delivered: {shown:?}"
    );
    let r = Received::parse(&got).unwrap();
    assert_eq!(r.status, 200, "{shown:?}");
    assert!(r.head.contains(&farm.ids[0]), "{shown:?}");
    let r = get_once(p.client_addr(), "app.test", "/after");
    assert_served(&r, &farm.ids[0], "/after", "after the eager backend");
    p.assert_alive();
}

/// Bytes after a complete response — a second response, or a body where
/// none may be — come with it in one write. The response is delivered
/// whole, the backend is closed, and the extra bytes reach no one.
#[test]
fn bytes_after_a_complete_response_close_the_backend_and_reach_nobody() {
    // (case, request method, what the backend sends, how what the client
    // receives ends)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "a second response after a complete one",
            "GET",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
             HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{M}",
            "\r\n\r\nhello",
        ),
        (
            "a body to a HEAD request",
            "HEAD",
            "HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{M}",
            "\r\n\r\n",
        ),
        (
            "a body after a 204",
            "GET",
            "HTTP/1.1 204 No Content\r\n\r\n{M}",
            "\r\n\r\n",
        ),
        (
            "a body after a 304",
            "GET",
            "HTTP/1.1 304 Not Modified\r\n\r\n{M}",
            "\r\n\r\n",
        ),
    ];
    for &(name, method, sent, ends_with) in cases {
        let mut p = Proxy::start(&one_section("", ""));
        let hostile_id = id12("extra", 1);
        let mut hostile = Backend::connect(p.backend_addr(0), &hostile_id, "");
        let mut victim = Client::connect(p.client_addr());
        victim.send(format!("{method} /attack HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes());
        assert_eq!(hostile.expect_request().target, "/attack", "{name}");
        let bystander = Bystander::start(&p);

        hostile.write(&bytes(sent));
        assert!(
            hostile.is_closed(T),
            "{name}: the proxy kept a backend that sent bytes after its response"
        );
        let mut got = Vec::new();
        let delivered = receive_until(&mut victim.conn.stream, &mut got, T, |g| {
            find(g, ends_with.as_bytes()).is_some()
        });
        // Whatever follows within a moment (a close, or nothing at all).
        let closed = receive_to_close(
            &mut victim.conn.stream,
            &mut got,
            Duration::from_millis(300),
        );
        let shown = String::from_utf8_lossy(&got);
        assert!(
            !has_marker(&got),
            "{name}: the extra bytes were delivered: {shown:?}"
        );
        assert!(
            delivered,
            "{name}: the response was not delivered: {shown:?}"
        );
        assert!(
            got.ends_with(ends_with.as_bytes()),
            "{name}: bytes after the response: {shown:?}"
        );
        if !closed {
            // The client connection is sound: its next request is served
            // by the healthy backend.
            let r = victim.request(&attacked_request("/again"));
            assert_served(&r, bystander.id(), "/again", name);
        }
        bystander.check(&p, name);
        assert_logged(&p, &hostile_id, "sent bytes after its response", name);
        p.assert_alive();
    }
}

/// The helpers above judge what they are shown correctly.
#[test]
fn received_responses_are_judged_by_their_framing() {
    let whole = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    let r = Received::parse(whole).unwrap();
    assert_eq!(r.end, Some(whole.len()));
    let cut = &whole[..whole.len() - 5];
    assert_eq!(Received::parse(cut).unwrap().end, None);
    let trailers = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n";
    assert_eq!(Received::parse(trailers).unwrap().end, Some(trailers.len()));
    let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello";
    assert_eq!(Received::parse(short).unwrap().end, None);
    let error = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad";
    let r = Received::parse(error).unwrap();
    assert_eq!((r.status, r.end), (502, Some(error.len())));
    assert!(r.says_close());
}
