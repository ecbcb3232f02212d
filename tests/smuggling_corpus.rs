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
//! The parsers, the recording backend and the client side are in
//! `tests/smuggling/harness.rs` (shared with `benches/smuggling_diff.rs`).
//! All failures are collected and reported together at the end.
//! `SMUGGLING_CORPUS_ONLY=substring` runs only the cases whose name contains
//! it; `SMUGGLING_CORPUS_VERBOSE=1` prints what each case did.

mod common;
#[path = "smuggling/corpus.rs"]
mod corpus;
#[path = "smuggling/harness.rs"]
mod harness;

use common::{one_section, Proxy};
use corpus::{escape, Case, Expect};
use harness::{
    find, is_timeout, lenient, parse_responses, pct_escape, pct_unescape, play_case,
    request_line_in, sent_target, show, strict, Event, Exchange, Forwarded, Lenient,
    RecordingBackend, Strict, Timing, What, NO_CASE,
};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// Backend connections kept open to the proxy.
const BACKENDS: usize = 4;
const TIMING: Timing = Timing {
    quiet: Duration::from_millis(30),
    quiet_nothing_yet: Duration::from_millis(100),
    quiet_pending: Duration::from_millis(200),
    quiet_after_close: Duration::from_millis(10),
    case_max: Duration::from_millis(1000),
    peek: Duration::from_millis(2),
    stuck_after: Duration::from_millis(40),
    settle_max: Duration::from_millis(300),
};
const VICTIM_DEADLINE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------
// Running a case
// ---------------------------------------------------------------------------

/// What the client of one case saw.
struct Outcome {
    exchange: Exchange,
    /// The next client, on a new connection, after the case.
    victim: Result<(), String>,
}

fn run_case(
    addr: SocketAddr,
    be: &RecordingBackend,
    events: &mut Vec<Event>,
    i: usize,
    case: &Case,
) -> Outcome {
    match play_case(addr, be, events, i, &case.bytes) {
        Ok(exchange) => {
            let victim = victim(addr, i);
            be.drain(events);
            Outcome { exchange, victim }
        }
        Err(e) => Outcome {
            exchange: Exchange {
                closed: true,
                ..Exchange::default()
            },
            victim: Err(format!("could not even connect for the case: {e}")),
        },
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
            Err(e) if is_timeout(&e) => {}
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
            // The client went away mid-request; `still_busy` says whether
            // the proxy dropped the rest.
            What::Partial { .. } => {}
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

    let (resps, rest) = parse_responses(&o.exchange.received);
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
    if o.exchange.still_busy {
        problems.push(format!(
            "a backend connection still held part of a request {:?} after the client had gone",
            TIMING.settle_max
        ));
    }
    if let Err(e) = &o.victim {
        problems.push(format!(
            "the next client ({victim}, on a new connection): {e}"
        ));
    }

    let first = resps.first();
    let summary = || match first {
        None if o.exchange.closed => "the connection closed without a response".to_string(),
        None => format!(
            "no response and the connection stayed open (got {:?})",
            show(&o.exchange.received, 100)
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
            if forwarded.is_empty() && stuck == 0 && o.exchange.backend_bytes > 0 {
                problems.push(format!(
                    "expected refused, but {} bytes of it reached a backend",
                    o.exchange.backend_bytes
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
    let mut be = RecordingBackend::dial_in(proxy.backend_addr(0), BACKENDS, TIMING);
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
                o.exchange.took.as_millis(),
                show(&o.exchange.received, 120)
            );
        }
        outcomes.push(o);
    }
    thread::sleep(TIMING.quiet);
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
    // A Content-Length whose end overflows 64 bits is valid grammar: its
    // body is incomplete, for both parsers; one past 64 bits is refused.
    let huge: &[u8] =
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\nx";
    assert_eq!(strict(huge), Strict::Incomplete);
    assert!(matches!(lenient(huge), Lenient::Incomplete(Some(_))));
    assert!(matches!(
        strict(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n"),
        Strict::Error(_)
    ));
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
