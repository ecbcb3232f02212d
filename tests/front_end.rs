//! The front end against real backends of the old school: request framing a
//! lenient backend would read differently from the proxy (trailer smuggling,
//! bare LF, a Host that disagrees with an absolute-form target, odd targets,
//! odd chunk lines), what is accepted that used to be refused (BWS before a
//! chunk extension, leading zeros in a chunk size, HTTP/1.2), and request
//! bodies that must not cost a backend connection: a bad body arriving with
//! its head (no backend is aborted), slow uploads (buffered or spooled before
//! a backend is paired, or cut off under `min_body_rate`) and
//! `Expect: 100-continue` answered by the proxy itself.
//!
//! `Lenient` plays the backends: it dials in with the handshake and parses
//! requests the way a forgiving Ruby-era server does (LF-only lines, any
//! `Transfer-Encoding` naming `chunked` wins, chunk size = leading hex
//! digits, trailers end at the first blank or whitespace-only line), answers
//! every request with `target=<request target>`, and records every head it
//! parsed per connection, and which connections the proxy closed.
//!
//! The tests run one at a time (`one_at_a_time`): several measure latencies
//! on a 2-core machine.

mod common;

use common::*;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request as the lenient backend parsed it.
#[derive(Clone)]
struct Parsed {
    /// Which backend connection (0-based, in the order they were opened).
    conn: usize,
    /// The head byte for byte, from the request line through the blank line.
    head: Vec<u8>,
    request_line: String,
    target: String,
    headers: Vec<(String, String)>,
    /// The decoded body, once it has all arrived.
    body: Option<Vec<u8>>,
}

impl std::fmt::Debug for Parsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conn {}: {:?}", self.conn, self.head_str())?;
        match &self.body {
            Some(b) if b.len() <= 100 => write!(f, " body {:?}", String::from_utf8_lossy(b)),
            Some(b) => write!(f, " body of {} bytes", b.len()),
            None => write!(f, " (body incomplete)"),
        }
    }
}

impl Parsed {
    fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }

    fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
struct LenientState {
    /// Connections opened to the proxy.
    opened: usize,
    /// Connections the proxy closed (EOF or reset), by index.
    closed: Vec<usize>,
    /// Every request head parsed, in order.
    requests: Vec<Parsed>,
}

impl LenientState {
    fn complete(&self, target: &str) -> Option<&Parsed> {
        self.requests
            .iter()
            .find(|r| r.target == target && r.body.is_some())
    }

    fn any_head_contains(&self, s: &str) -> bool {
        self.requests.iter().any(|r| r.head_str().contains(s))
    }
}

type Shared = Arc<(Mutex<LenientState>, Condvar)>;

/// How a backend connection's service ended.
enum End {
    /// The proxy closed it (EOF or reset).
    Closed,
    /// The test is over.
    Stopped,
}

/// How long the lenient backend takes to answer `/slow`.
const SLOW_ENDPOINT: Duration = Duration::from_millis(500);

static LENIENT_IDS: AtomicUsize = AtomicUsize::new(1);

/// `n` backend connections in threads, each parsing requests leniently and
/// answering `200` with body `target=<target>` (`/slow` only after
/// `SLOW_ENDPOINT`). With `reconnect`, a connection the proxy closes is
/// replaced by a new one.
struct Lenient {
    shared: Shared,
    stop: Arc<AtomicBool>,
}

impl Lenient {
    fn start(addr: SocketAddr, n: usize, reconnect: bool) -> Lenient {
        let shared: Shared = Arc::new((Mutex::new(LenientState::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..n {
            let id = id12("lenient", LENIENT_IDS.fetch_add(1, Ordering::SeqCst));
            // Connected here, so `opened` is `n` when start returns.
            let first = dial(addr, &id).unwrap_or_else(|e| panic!("backend connect {addr}: {e}"));
            let idx = register(&shared);
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::spawn(move || {
                let mut next = Some((first, idx));
                while let Some((mut conn, idx)) = next.take() {
                    loop {
                        match serve_one(&mut conn, idx, &shared, &stop) {
                            Ok(()) => continue,
                            Err(End::Closed) => {
                                let (m, cv) = &*shared;
                                m.lock().unwrap().closed.push(idx);
                                cv.notify_all();
                                break;
                            }
                            Err(End::Stopped) => return,
                        }
                    }
                    if !reconnect || stop.load(Ordering::SeqCst) {
                        return;
                    }
                    thread::sleep(Duration::from_millis(20));
                    if let Ok(c) = dial(addr, &id) {
                        next = Some((c, register(&shared)));
                    }
                }
            });
        }
        Lenient { shared, stop }
    }

    fn state(&self) -> LenientState {
        self.shared.0.lock().unwrap().clone()
    }

    /// Waits until `pred` holds (true) or `timeout` passes (false).
    fn wait(&self, timeout: Duration, pred: impl Fn(&LenientState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.shared;
        let mut st = m.lock().unwrap();
        loop {
            if pred(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Waits until the complete request for `target` arrived; returns it.
    fn expect_complete(&self, target: &str, timeout: Duration) -> Parsed {
        if !self.wait(timeout, |s| s.complete(target).is_some()) {
            panic!(
                "the backend did not receive the complete request {target:?} within \
                 {timeout:?}; it saw {:?}",
                self.state().requests
            );
        }
        self.state().complete(target).unwrap().clone()
    }
}

impl Drop for Lenient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn dial(addr: SocketAddr, id: &str) -> io::Result<Conn> {
    let mut c = Conn::connect(addr)?;
    c.write_all(&handshake_bytes(id, ""))?;
    // Short reads, so that the thread notices `stop`.
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(c)
}

fn register(shared: &Shared) -> usize {
    let (m, cv) = &**shared;
    let mut st = m.lock().unwrap();
    st.opened += 1;
    cv.notify_all();
    st.opened - 1
}

/// Runs `f` until it does not time out; a timeout after `stop` ends it.
fn retry<T>(stop: &AtomicBool, mut f: impl FnMut() -> io::Result<T>) -> Result<T, End> {
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if stop.load(Ordering::SeqCst) {
                    return Err(End::Stopped);
                }
            }
            Err(_) => return Err(End::Closed),
        }
    }
}

/// One line through its LF, the LF included.
fn line(conn: &mut Conn, stop: &AtomicBool) -> Result<Vec<u8>, End> {
    retry(stop, || conn.read_until(b"\n", 1 << 20))?.ok_or(End::Closed)
}

/// A line without its LF and an optional CR before it.
fn trim_eol(l: &[u8]) -> &[u8] {
    let l = l.strip_suffix(b"\n").unwrap_or(l);
    l.strip_suffix(b"\r").unwrap_or(l)
}

fn read_n(conn: &mut Conn, n: u64, stop: &AtomicBool, out: &mut Vec<u8>) -> Result<(), End> {
    let mut left = n;
    while left > 0 {
        let want = left.min(1 << 20) as usize;
        let got = retry(stop, || {
            conn.read_some(want, &mut |b: &[u8]| out.extend_from_slice(b))
        })?;
        if got == 0 {
            return Err(End::Closed);
        }
        left -= got as u64;
    }
    Ok(())
}

/// Leading digits of `s` in `radix` (0 if none or too many).
fn leading_number(s: &[u8], radix: u32) -> u64 {
    let digits: String = s
        .iter()
        .take_while(|b| (**b as char).is_digit(radix))
        .map(|b| *b as char)
        .collect();
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return 0;
    }
    u64::from_str_radix(digits, radix).unwrap_or(0)
}

/// Reads, records and answers one request the lenient way.
fn serve_one(conn: &mut Conn, idx: usize, shared: &Shared, stop: &AtomicBool) -> Result<(), End> {
    let mut head = Vec::new();
    let first = loop {
        let l = line(conn, stop)?;
        if !trim_eol(&l).is_empty() {
            head.extend_from_slice(&l);
            break String::from_utf8_lossy(trim_eol(&l)).into_owned();
        }
    };
    let mut headers = Vec::new();
    loop {
        let l = line(conn, stop)?;
        head.extend_from_slice(&l);
        let t = trim_eol(&l);
        if t.is_empty() {
            break;
        }
        let t = String::from_utf8_lossy(t);
        if let Some((n, v)) = t.split_once(':') {
            headers.push((n.trim().to_string(), v.trim().to_string()));
        }
    }
    let target = first.split_whitespace().nth(1).unwrap_or("").to_string();
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    let length = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| leading_number(v.as_bytes(), 10));
    let k = {
        let (m, cv) = &**shared;
        let mut st = m.lock().unwrap();
        st.requests.push(Parsed {
            conn: idx,
            head,
            request_line: first,
            target: target.clone(),
            headers,
            body: None,
        });
        cv.notify_all();
        st.requests.len() - 1
    };
    let mut body = Vec::new();
    if chunked {
        loop {
            let size = leading_number(trim_eol(&line(conn, stop)?), 16);
            if size == 0 {
                // Trailers: through the first blank or whitespace-only line.
                while !trim_eol(&line(conn, stop)?)
                    .iter()
                    .all(u8::is_ascii_whitespace)
                {}
                break;
            }
            read_n(conn, size, stop, &mut body)?;
            line(conn, stop)?; // whatever ends the chunk data
        }
    } else if let Some(n) = length {
        read_n(conn, n, stop, &mut body)?;
    }
    {
        let (m, cv) = &**shared;
        m.lock().unwrap().requests[k].body = Some(body);
        cv.notify_all();
    }
    if target == "/slow" {
        // A slow endpoint: answered after the next request may have come.
        thread::sleep(SLOW_ENDPOINT);
    }
    let answer = format!("target={target}");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
        answer.len()
    );
    conn.write_all(response.as_bytes()).map_err(|_| End::Closed)
}

fn wait_joined(p: &Proxy, n: usize) {
    assert!(
        p.wait_for_log_count("joined section", n, Duration::from_secs(5)),
        "{n} backend connection(s) did not join; stderr:\n{}",
        p.stderr_text()
    );
}

/// One proxy, one section (`app.test`, the default), `n` lenient backend
/// connections, all joined.
fn setup(top: &str, n: usize, reconnect: bool) -> (Proxy, Lenient) {
    let p = Proxy::start(&one_section(top, ""));
    let b = Lenient::start(p.backend_addr(0), n, reconnect);
    wait_joined(&p, n);
    (p, b)
}

/// Reads one response from `c` (a 1xx counts as one), which must be complete
/// within `within`.
fn response_within(c: &mut Client, within: Duration, what: &str) -> Response {
    let t = Instant::now();
    let _ = c.conn.stream.set_read_timeout(Some(within));
    let r = c.try_read_response(false);
    let _ = c.conn.stream.set_read_timeout(Some(IO_TIMEOUT));
    match r {
        Ok(r) if t.elapsed() <= within => r,
        Ok(r) => panic!(
            "{what}: answered after {:?}, over {within:?}: {r:?}",
            t.elapsed()
        ),
        Err(e) => panic!("{what}: no complete response within {within:?}: {e:?}"),
    }
}

/// `bytes` on a new connection; the response must come within `within`.
fn request_within(
    addr: SocketAddr,
    bytes: &[u8],
    within: Duration,
    what: &str,
) -> (Client, Response) {
    let mut c = Client::connect(addr);
    c.send(bytes);
    let r = response_within(&mut c, within, what);
    (c, r)
}

fn assert_answered(r: &Response, target: &str) {
    assert_eq!(r.status, 200, "request for {target:?}: {r:?}");
    assert_eq!(
        r.body_str(),
        format!("target={target}"),
        "the response to {target:?} is another request's: {r:?}"
    );
}

/// A normal GET on a new connection is answered by a backend.
fn healthy(p: &Proxy, b: &Lenient) {
    let path = format!("/{}", token("healthy"));
    let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");
    let (_, r) = request_within(
        p.client_addr(),
        req.as_bytes(),
        Duration::from_secs(3),
        "a healthy request afterwards",
    );
    assert_answered(&r, &path);
    b.expect_complete(&path, Duration::from_secs(2));
}

/// `bad` is refused with `400` and `Connection: close`, the connection
/// closes, and the backend never sees a thing of it (only the healthy
/// request that follows).
fn check_refused(bad: &[u8]) {
    let _serial = one_at_a_time();
    let (p, b) = setup("", 1, true);
    let (mut c, r) = request_within(
        p.client_addr(),
        bad,
        Duration::from_secs(3),
        "the bad request",
    );
    assert_error_response(&r, 400);
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "connection left open after 400"
    );
    healthy(&p, &b);
    let st = b.state();
    assert_eq!(
        st.requests.len(),
        1,
        "a refused request reached the backend: {:?}",
        st.requests
    );
}

/// `request` is forwarded: the client gets `200` for `target`, and the
/// backend's copy is returned once complete.
fn check_forwarded(request: &[u8], target: &str) -> Parsed {
    let _serial = one_at_a_time();
    let (p, b) = setup("", 1, true);
    let (_, r) = request_within(p.client_addr(), request, Duration::from_secs(3), target);
    assert_answered(&r, target);
    let seen = b.expect_complete(target, Duration::from_secs(2));
    healthy(&p, &b);
    seen
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

fn scrape(p: &Proxy) -> String {
    let (_, r) = request_within(
        p.client_addr(),
        b"GET /status HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
        "the metrics page",
    );
    assert_eq!(r.status, 200, "metrics page: {r:?}");
    r.body_str()
}

/// A sample line's name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses a sample line `name{k="v",...} value`.
fn parse_sample(line: &str) -> Option<Sample> {
    let (name_labels, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (name, labels) = match name_labels.split_once('{') {
        None => (name_labels, Vec::new()),
        Some((name, rest)) => {
            let rest = rest.strip_suffix('}')?;
            let mut labels = Vec::new();
            for pair in rest.split("\",") {
                if pair.is_empty() {
                    continue;
                }
                let (k, v) = pair.split_once('=')?;
                let v = v.trim_start_matches('"').trim_end_matches('"');
                labels.push((k.trim().to_string(), v.to_string()));
            }
            (name, labels)
        }
    };
    Some((name.to_string(), labels, value))
}

/// Values of the samples of `name` carrying all of `labels`.
fn samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
        .filter(|(n, ls, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .collect()
}

const ABORTED: &str = "swiftiply_backends_aborted_total";

// ---------------------------------------------------------------------------
// 1. Trailer smuggling
// ---------------------------------------------------------------------------

/// The attacker's chunked body ends in `last_chunk`, then `trailer_line`
/// and a second request a lenient backend would read as one of its own.
/// The attack is refused; a victim sent afterwards gets its own answer.
fn check_trailer_smuggling(trailer_line: &str) {
    let _serial = one_at_a_time();
    let (p, b) = setup("", 1, true);
    let attack = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\n{trailer_line}GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    let (mut c, r) = request_within(
        p.client_addr(),
        attack.as_bytes(),
        Duration::from_secs(3),
        "the attack",
    );
    assert_error_response(&r, 400);
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "attacker's connection left open"
    );

    let (_, victim) = request_within(
        p.client_addr(),
        b"GET /hello HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
        "the victim",
    );
    assert_answered(&victim, "/hello");
    b.expect_complete("/hello", Duration::from_secs(2));
    let st = b.state();
    assert!(
        !st.any_head_contains("/slow"),
        "the smuggled request reached the backend: {:?}",
        st.requests
    );
    healthy(&p, &b);
}

#[test]
fn bare_lf_blank_line_ending_a_chunked_body_is_refused() {
    check_trailer_smuggling("\n");
}

#[test]
fn whitespace_only_trailer_line_is_refused() {
    check_trailer_smuggling(" \r\n");
}

#[test]
fn tab_only_trailer_line_is_refused() {
    check_trailer_smuggling("\t\r\n");
}

// ---------------------------------------------------------------------------
// 2. Bare LF in a request head
// ---------------------------------------------------------------------------

#[test]
fn bare_lf_request_head_is_refused() {
    check_refused(b"GET /lf HTTP/1.1\nHost: a\n\n");
}

// ---------------------------------------------------------------------------
// 3. Host and absolute-form targets
// ---------------------------------------------------------------------------

/// Sections `routed.example` (0) and a default one (1), each with a lenient
/// backend.
fn two_sections() -> (Proxy, Lenient, Lenient) {
    let p = Proxy::start(&config(
        "",
        &[
            "incoming: routed.example\noutgoing: 127.0.0.1:0",
            "incoming: app.test\noutgoing: 127.0.0.1:0\ndefault: true",
        ],
    ));
    let routed = Lenient::start(p.backend_addr(0), 1, true);
    let other = Lenient::start(p.backend_addr(1), 1, true);
    wait_joined(&p, 2);
    (p, routed, other)
}

#[test]
fn absolute_form_target_with_another_host_is_refused() {
    let _serial = one_at_a_time();
    let (p, routed, other) = two_sections();
    let (mut c, r) = request_within(
        p.client_addr(),
        b"GET http://routed.example/abs HTTP/1.1\r\nHost: evil.example\r\n\r\n",
        Duration::from_secs(3),
        "absolute form with Host: evil.example",
    );
    assert_error_response(&r, 400);
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "connection left open after 400"
    );
    healthy(&p, &other);
    let (sr, so) = (routed.state(), other.state());
    assert!(
        sr.requests.is_empty() && so.requests.len() == 1,
        "the refused request reached a backend: routed {:?}, default {:?}",
        sr.requests,
        so.requests
    );
}

#[test]
fn absolute_form_target_with_its_own_host_is_forwarded_in_origin_form() {
    let _serial = one_at_a_time();
    let (p, routed, other) = two_sections();
    for host in ["routed.example", "ROUTED.example:80"] {
        let before = routed.state().requests.len();
        let req = format!("GET http://routed.example/abs HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let (_, r) = request_within(
            p.client_addr(),
            req.as_bytes(),
            Duration::from_secs(3),
            host,
        );
        assert_answered(&r, "/abs");
        assert!(
            routed.wait(Duration::from_secs(2), |s| s.requests.len() > before
                && s.requests[before].body.is_some())
        );
        let seen = routed.state().requests[before].clone();
        assert_eq!(
            seen.request_line,
            "GET /abs HTTP/1.1",
            "{}",
            seen.head_str()
        );
        assert_eq!(
            seen.headers_named("host"),
            vec![host],
            "{}",
            seen.head_str()
        );
    }
    assert!(other.state().requests.is_empty(), "{:?}", other.state());
    healthy(&p, &other);
}

#[test]
fn http10_absolute_form_without_host_gets_the_authority_as_host() {
    let _serial = one_at_a_time();
    let (p, routed, other) = two_sections();
    let (_, r) = request_within(
        p.client_addr(),
        b"GET http://routed.example/abs HTTP/1.0\r\n\r\n",
        Duration::from_secs(3),
        "HTTP/1.0 absolute form, no Host",
    );
    assert_answered(&r, "/abs");
    let seen = routed.expect_complete("/abs", Duration::from_secs(2));
    assert!(
        seen.request_line.starts_with("GET /abs HTTP/1."),
        "{}",
        seen.head_str()
    );
    assert_eq!(
        seen.headers_named("host"),
        vec!["routed.example"],
        "{}",
        seen.head_str()
    );
    healthy(&p, &other);
}

// ---------------------------------------------------------------------------
// 4. Refused, never forwarded
// ---------------------------------------------------------------------------

#[test]
fn target_that_is_not_a_path_is_refused() {
    check_refused(b"GET ! HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn target_with_a_fragment_is_refused() {
    check_refused(b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n");
}

#[test]
fn trailer_line_that_is_not_a_field_is_refused() {
    check_refused(
        b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\nnot a field\r\n\r\n",
    );
}

#[test]
fn chunk_extension_with_nul_is_refused() {
    check_refused(
        b"POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;a\x00b\r\nhello\r\n0\r\n\r\n",
    );
}

// ---------------------------------------------------------------------------
// 5. Accepted and forwarded
// ---------------------------------------------------------------------------

#[test]
fn whitespace_before_a_chunk_extension_is_accepted() {
    let seen = check_forwarded(
        b"POST /bws HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5 ;foo=bar\r\nhello\r\n0\r\n\r\n",
        "/bws",
    );
    assert_eq!(seen.body.as_deref(), Some(&b"hello"[..]), "{seen:?}");
}

#[test]
fn leading_zeros_in_a_chunk_size_are_accepted() {
    let seen = check_forwarded(
        b"POST /zeros HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          0000000000000005\r\nhello\r\n0\r\n\r\n",
        "/zeros",
    );
    assert_eq!(seen.body.as_deref(), Some(&b"hello"[..]), "{seen:?}");
}

#[test]
fn http_1_2_is_handled_as_http_1_1() {
    let seen = check_forwarded(b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", "/");
    assert_eq!(seen.request_line, "GET / HTTP/1.1", "{}", seen.head_str());
}

// ---------------------------------------------------------------------------
// 6. A bad body that came with its head costs no backend connection
// ---------------------------------------------------------------------------

#[test]
fn bad_chunk_size_arriving_with_the_head_aborts_no_backend() {
    let _serial = one_at_a_time();
    // One backend connection that never comes back once closed; `timeout: 1`
    // so that a request with no backend left fails fast.
    let (p, b) = setup("status_uri: /status\ntimeout: 1", 1, false);
    let (mut c, r) = request_within(
        p.client_addr(),
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
        Duration::from_secs(3),
        "bad chunk size",
    );
    assert_error_response(&r, 400);
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "connection left open after 400"
    );

    let (_, r) = request_within(
        p.client_addr(),
        b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n",
        Duration::from_secs(3),
        "a GET after the 400",
    );
    assert_answered(&r, "/after");
    let seen = b.expect_complete("/after", Duration::from_secs(2));
    let st = b.state();
    assert_eq!(
        (seen.conn, st.opened, st.closed.clone()),
        (0, 1, vec![]),
        "the backend connection was not kept: {st:?}"
    );

    // A Content-Length body that came whole with its head: just works.
    let (_, r) = request_within(
        p.client_addr(),
        b"POST /cl HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
        Duration::from_secs(3),
        "a Content-Length POST",
    );
    assert_answered(&r, "/cl");
    let seen = b.expect_complete("/cl", Duration::from_secs(2));
    assert_eq!(seen.body.as_deref(), Some(&b"hello"[..]));

    let text = scrape(&p);
    // The page parses (so that "absent" below means absent).
    assert_eq!(
        samples(
            &text,
            "swiftiply_backends_joined_total",
            &[("section", "app.test")]
        ),
        vec![1.0],
        "{text}"
    );
    let aborted = samples(&text, ABORTED, &[("reason", "client_body_error")]);
    assert!(
        aborted.iter().all(|v| *v == 0.0),
        "a backend connection was aborted for the bad body: {aborted:?}\n{text}"
    );
    healthy(&p, &b);
    assert!(b.state().closed.is_empty(), "{:?}", b.state());
}

// ---------------------------------------------------------------------------
// 7. Slow uploads
// ---------------------------------------------------------------------------

/// A client that sent a head and then trickles `piece`-byte writes every
/// `every` (from a thread, on a clone of its socket) until told to stop or
/// a write fails. Reads go through `client`.
struct Trickler {
    client: Client,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Trickler {
    fn start(addr: SocketAddr, head: &str, piece: usize, every: Duration) -> Trickler {
        let mut client = Client::connect(addr);
        client.send(head.as_bytes());
        let mut writer = client
            .conn
            .stream
            .try_clone()
            .expect("clone the client socket");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let handle = thread::spawn(move || {
            let bytes = vec![b'x'; piece];
            while !stop2.load(Ordering::SeqCst) {
                thread::sleep(every);
                if writer.write_all(&bytes).is_err() {
                    break;
                }
                sent2.fetch_add(piece, Ordering::SeqCst);
            }
        });
        Trickler {
            client,
            stop,
            sent,
            handle: Some(handle),
        }
    }

    fn sent(&self) -> usize {
        self.sent.load(Ordering::SeqCst)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            join_within(h, Duration::from_secs(2), "trickler");
        }
    }
}

impl Drop for Trickler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[test]
fn slow_uploads_do_not_hold_backends_hostage() {
    let _serial = one_at_a_time();
    let (p, b) = setup("timeout: 3", 8, false);
    let head = "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n";
    let slow: Vec<Trickler> = (0..8)
        .map(|_| Trickler::start(p.client_addr(), head, 1, Duration::from_millis(200)))
        .collect();
    assert!(
        eventually(Duration::from_secs(3), || slow
            .iter()
            .all(|t| t.sent() >= 2)),
        "the slow uploads did not get going"
    );

    // Well-behaved traffic for 5 s, one GET every 250 ms.
    let start = Instant::now();
    for n in 0..20u32 {
        let at = start + Duration::from_millis(250) * n;
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        let target = format!("/ok-{n}");
        let req = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        let (_, r) = request_within(
            p.client_addr(),
            req.as_bytes(),
            Duration::from_secs(1),
            &format!("GET {target} while 8 uploads trickle"),
        );
        assert_answered(&r, &target);
    }
    for mut t in slow {
        t.stop();
    }
    healthy(&p, &b);
}

#[test]
fn a_streamed_body_under_min_body_rate_is_cut_off() {
    let _serial = one_at_a_time();
    let (p, b) = setup(
        "status_uri: /status\nrequest_spool_limit: 0\nmin_body_rate: 1000\nmin_body_rate_grace: 1",
        2,
        false,
    );
    let head = "POST /upload-slowly HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n";
    let t0 = Instant::now();
    let mut slow = Trickler::start(p.client_addr(), head, 10, Duration::from_millis(200));
    let within = Duration::from_millis(3500);
    let _ = slow.client.conn.stream.set_read_timeout(Some(within));
    match slow.client.try_read_response(false) {
        Ok(r) => assert_error_response(&r, 408),
        Err(e) => assert!(
            e.partial.is_some() && e.error.kind() != io::ErrorKind::TimedOut,
            "the slow upload was neither answered 408 nor cut off within {within:?}: {e:?}"
        ),
    }
    let took = t0.elapsed();
    assert!(took <= within, "cut off only after {took:?}");
    assert!(
        slow.client.is_closed(Duration::from_secs(2)),
        "the slow client's connection was left open"
    );
    slow.stop();

    // The backend connection that held the request was closed by the proxy.
    assert!(
        b.wait(Duration::from_secs(2), |s| {
            s.requests
                .iter()
                .find(|r| r.target == "/upload-slowly")
                .is_some_and(|r| s.closed.contains(&r.conn))
        }),
        "the backend connection holding the slow upload was not closed: {:?}",
        b.state()
    );
    let text = scrape(&p);
    let slow_aborts = samples(
        &text,
        ABORTED,
        &[("section", "app.test"), ("reason", "client_body_slow")],
    );
    assert_eq!(slow_aborts, vec![1.0], "{text}");

    // Fast enough: 100000 bytes in 10 quick writes.
    let mut c = Client::connect(p.client_addr());
    c.send(b"POST /fast HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n");
    for _ in 0..10 {
        c.send(&[b'y'; 10_000]);
    }
    let r = response_within(&mut c, Duration::from_secs(3), "the fast upload");
    assert_answered(&r, "/fast");
    let seen = b.expect_complete("/fast", Duration::from_secs(2));
    assert_eq!(seen.body.map(|b| b.len()), Some(100_000));
    healthy(&p, &b);
}

#[test]
fn expect_100_continue_is_answered_by_the_proxy() {
    let _serial = one_at_a_time();
    let (p, b) = setup("", 1, true);
    let mut c = Client::connect(p.client_addr());
    c.send(
        b"POST /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    );
    let interim = response_within(&mut c, Duration::from_millis(500), "100 Continue");
    assert!(
        interim.raw_head.starts_with(b"HTTP/1.1 100 Continue\r\n"),
        "{interim:?}"
    );
    c.send(b"hello");
    let r = response_within(&mut c, Duration::from_secs(3), "the final response");
    assert_answered(&r, "/expect");
    let seen = b.expect_complete("/expect", Duration::from_secs(2));
    assert_eq!(seen.body.as_deref(), Some(&b"hello"[..]));
    healthy(&p, &b);
}
