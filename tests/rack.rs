//! The Ruby/Rack handler (`clients/ruby/swiftiply_rack.rb`) serving
//! `clients/ruby/example/config.ru` as native backends of a real proxy:
//! request bodies both ways, packet-mode streaming re-framed for HTTP/1.1
//! and HTTP/1.0 clients, parallel connections, the Rack env, app errors,
//! keys, reconnection and a graceful SIGTERM.
//!
//! The tests need `ruby` and the `rack` gem (Debian: `ruby`, `ruby-rack`;
//! `tests/run.sh` installs them). Without them each test says so and passes,
//! unless the environment variable `CI` is set: then a missing Ruby fails.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/clients/ruby/swiftiply_rack.rb"
);
const APP: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/clients/ruby/example/config.ru"
);
/// How long the handler may take to boot and serve its first request.
const SERVING_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the handler may take to exit after SIGTERM (or the check for
/// Ruby may take).
const EXIT_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Is Ruby with rack here?
// ---------------------------------------------------------------------------

/// Runs `ruby -e 'require "rack"'` once: Ok, or why not.
fn ruby_with_rack() -> &'static Result<(), String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK.get_or_init(|| {
        let mut child = Command::new("ruby")
            .args(["-e", "require 'rack'"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run `ruby`: {e}"))?;
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("`ruby -e 'require \"rack\"'` failed ({s})")),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err("`ruby -e 'require \"rack\"'` did not finish".into());
                }
            }
        }
    })
}

/// True when the test can run. Without Ruby/rack: prints why and returns
/// false, or panics when `CI` is set (CI must run these tests).
fn rack_available(test: &str) -> bool {
    match ruby_with_rack() {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => panic!(
            "{test}: {why}, and CI is set, so this test must run: install the Debian \
             packages `ruby` and `ruby-rack` (tests/run.sh does)"
        ),
        Err(why) => {
            eprintln!(
                "SKIPPED {test}: {why}; install `ruby` and `ruby-rack` (tests/run.sh does) \
                 to run the Rack handler tests"
            );
            false
        }
    }
}

// ---------------------------------------------------------------------------
// The handler process
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    eof: bool,
}

type SharedLines = Arc<(Mutex<Lines>, Condvar)>;

/// A running `ruby swiftiply_rack.rb ... config.ru`; killed on drop, with
/// its stderr printed when the test failed.
struct RackHandler {
    child: Child,
    log: SharedLines,
}

impl RackHandler {
    /// `--connect addr --connections n`, then `args`.
    fn start(addr: SocketAddr, connections: usize, args: &[&str]) -> RackHandler {
        let mut full = vec![
            "--connect".to_string(),
            addr.to_string(),
            "--connections".to_string(),
            connections.to_string(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        RackHandler::spawn(&full, &[], APP)
    }

    /// `args` as given, environment variables `env`, the rackup file `app`.
    fn spawn(args: &[String], env: &[(&str, &str)], app: &str) -> RackHandler {
        let mut child = Command::new("ruby")
            .arg(SCRIPT)
            .args(args)
            .arg(app)
            .env_remove("SWIFTIPLY")
            .env_remove("SWIFTIPLY_KEY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start ruby {SCRIPT}: {e}"));
        let log: SharedLines = Arc::default();
        let stderr = child.stderr.take().unwrap();
        let shared = log.clone();
        thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = Vec::new();
            while let Ok(n) = r.read_until(b'\n', &mut line) {
                if n == 0 {
                    break;
                }
                let s = String::from_utf8_lossy(&line).trim_end().to_string();
                shared.0.lock().unwrap().lines.push(s);
                shared.1.notify_all();
                line.clear();
            }
            shared.0.lock().unwrap().eof = true;
            shared.1.notify_all();
        });
        RackHandler { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_text(&self) -> String {
        self.log.0.lock().unwrap().lines.join("\n")
    }

    /// Waits until a stderr line contains `substr`; false at the deadline.
    fn wait_for_log(&self, substr: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut st = m.lock().unwrap();
        loop {
            if st.lines.iter().any(|l| l.contains(substr)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.eof {
                return false;
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Panics, with its stderr, if the handler has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            thread::sleep(Duration::from_millis(100));
            panic!(
                "the Rack handler exited ({status}); its stderr:\n{}",
                self.stderr_text()
            );
        }
    }

    /// Waits for the process to exit; None at the deadline.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls `GET /hello` until it is answered by the app: the handshake has
    /// no acknowledgement, so a served request is the proof of life.
    fn wait_serving(&mut self, proxy: &Proxy) {
        let deadline = Instant::now() + SERVING_TIMEOUT;
        let mut last = String::from("no answer yet");
        while Instant::now() < deadline {
            self.assert_running();
            match try_get(proxy.client_addr(), "/hello") {
                Ok(r) if r.status == 200 && r.body == b"hello!\n" => return,
                Ok(r) => last = format!("{r:?}"),
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "the Rack handler did not serve GET /hello within {SERVING_TIMEOUT:?} (last: {last})\n\
             handler stderr:\n{}\nproxy stderr:\n{}",
            self.stderr_text(),
            proxy.stderr_text()
        );
    }
}

impl Drop for RackHandler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- Rack handler stderr (pid {}) ----\n{}\n---- end of Rack handler stderr ----",
                self.child.id(),
                self.stderr_text()
            );
        }
    }
}

/// One GET for host `app.test` on a fresh connection, errors as text.
fn try_get(addr: SocketAddr, path: &str) -> Result<Response, String> {
    let mut conn = Conn::connect(addr).map_err(|e| format!("connect: {e}"))?;
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    try_read_response(&mut conn, false).map_err(|e| format!("{e:?}"))
}

/// How many backends have joined the proxy's sections so far.
fn joined(proxy: &Proxy) -> usize {
    proxy.stderr_text().matches(" joined section ").count()
}

/// A proxy with one default section (`extra` section keys) and a handler
/// with `connections` connections that has served a request.
fn serving(extra: &str, connections: usize, args: &[&str]) -> (Proxy, RackHandler) {
    let proxy = Proxy::start(&one_section("", extra));
    let mut h = RackHandler::start(proxy.backend_addr(0), connections, args);
    h.wait_serving(&proxy);
    (proxy, h)
}

/// `n` bytes of every value 0..=255 in a scrambled order.
fn binary_body(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(7919) ^ (i >> 8)) as u8)
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn hello_head_and_not_found_on_one_keepalive_connection() {
    if !rack_available("hello_head_and_not_found_on_one_keepalive_connection") {
        return;
    }
    let (mut proxy, mut h) = serving("", 1, &[]);
    let mut c = Client::connect(proxy.client_addr());
    let r = c.get("app.test", "/hello");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"hello!\n");
    assert_eq!(r.header("content-length"), Some("7"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");
    assert!(!r.says_close(), "{r:?}");

    // HEAD: the head only; a body would desynchronise the backend stream.
    let r = c.request(b"HEAD /stream HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    assert!(!r.has_header("x-swiftiply-close"), "{r:?}");

    let r = c.get("app.test", "/nowhere");
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.body_str(), "not found: /nowhere\n");

    let r = c.get("app.test", "/hello");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"hello!\n");
    // One connection served everything: it was never dropped.
    assert_eq!(joined(&proxy), 1, "{}", proxy.stderr_text());
    assert!(
        !proxy.stderr_text().contains(" left section "),
        "{}",
        proxy.stderr_text()
    );
    h.assert_running();
    proxy.assert_alive();
}

#[test]
fn post_echo_of_100kb_with_content_length_and_chunked_bodies() {
    if !rack_available("post_echo_of_100kb_with_content_length_and_chunked_bodies") {
        return;
    }
    let (mut proxy, mut h) = serving("", 2, &[]);
    let body = binary_body(100 * 1024);
    let mut c = Client::connect(proxy.client_addr());

    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/x-test\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = c.request(&req);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("application/x-test"),
        "{r:?}"
    );
    assert_eq!(r.header("content-length"), Some("102400"), "{r:?}");
    assert!(r.body == body, "Content-Length body came back altered");

    // The same body chunked, in uneven chunks with an extension and a
    // trailer; the handler decodes it for the app.
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut off = 0;
    for (i, size) in [1usize, 4095, 30000, 7, 65536].iter().cycle().enumerate() {
        if off == body.len() {
            break;
        }
        let n = (*size).min(body.len() - off);
        let ext = if i == 0 { ";name=value" } else { "" };
        req.extend_from_slice(format!("{n:x}{ext}\r\n").as_bytes());
        req.extend_from_slice(&body[off..off + n]);
        req.extend_from_slice(b"\r\n");
        off += n;
    }
    req.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    let r = c.request(&req);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("102400"), "{r:?}");
    assert!(r.body == body, "chunked body came back altered");

    // An empty POST.
    let r = c.request(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    h.assert_running();
    proxy.assert_alive();
}

#[test]
fn expect_100_continue_gets_an_interim_response_before_the_body_is_sent() {
    if !rack_available("expect_100_continue_gets_an_interim_response_before_the_body_is_sent") {
        return;
    }
    let (mut proxy, mut h) = serving("", 1, &[]);
    let mut c = Client::connect(proxy.client_addr());
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\n\
          Content-Length: 11\r\n\r\n",
    );
    // The body is held back until the 100 arrives (IO_TIMEOUT bounds it).
    let interim = c.read_response(false);
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"hello world");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"hello world");
    h.assert_running();
    proxy.assert_alive();
}

/// Reads one chunked body from `c` chunk by chunk (the proxy re-frames each
/// packet as one chunk).
fn read_chunks(c: &mut Client) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    loop {
        let line = c.conn.read_line(100).expect("chunk size line");
        let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
        if size == 0 {
            assert!(
                c.conn
                    .read_line(100)
                    .expect("end of chunked body")
                    .is_empty(),
                "unexpected trailer"
            );
            return chunks;
        }
        let mut chunk = Vec::new();
        c.conn
            .read_exact_body(size as u64, &mut |b: &[u8]| chunk.extend_from_slice(b))
            .expect("chunk data");
        assert!(c.conn.read_line(0).expect("chunk end").is_empty());
        chunks.push(chunk);
    }
}

fn five_chunks() -> Vec<Vec<u8>> {
    (1..=5)
        .map(|i| format!("chunk {i}\n").into_bytes())
        .collect()
}

#[test]
fn streamed_body_reaches_an_http11_client_chunked_and_the_connection_stays_usable() {
    if !rack_available(
        "streamed_body_reaches_an_http11_client_chunked_and_the_connection_stays_usable",
    ) {
        return;
    }
    let (mut proxy, mut h) = serving("", 1, &[]);
    let mut c = Client::connect(proxy.client_addr());
    for path in ["/stream", "/stream?ms=20"] {
        c.send(format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes());
        let head = read_response_head(&mut c.conn)
            .expect("response head")
            .expect("response head before EOF");
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(
            head.header("transfer-encoding"),
            Some("chunked"),
            "{head:?}"
        );
        assert_eq!(head.header("content-length"), None, "{head:?}");
        assert_eq!(head.header("x-swiftiply-close"), None, "{head:?}");
        assert_eq!(head.header("connection"), None, "{head:?}");
        let chunks = read_chunks(&mut c);
        assert_eq!(
            chunks.concat(),
            five_chunks().concat(),
            "{path}: {:?}",
            chunks
                .iter()
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
        );
        if path.contains("ms=") {
            // Paced chunks cannot have been merged on the way.
            assert_eq!(chunks, five_chunks(), "{path}: one chunk per packet");
        }
    }
    let r = c.get("app.test", "/hello");
    assert_eq!(r.status, 200, "second request on the connection: {r:?}");
    assert_eq!(r.body, b"hello!\n");
    assert_eq!(joined(&proxy), 1, "{}", proxy.stderr_text());
    h.assert_running();
    proxy.assert_alive();
}

#[test]
fn streamed_body_reaches_an_http10_client_close_delimited() {
    if !rack_available("streamed_body_reaches_an_http10_client_close_delimited") {
        return;
    }
    let (mut proxy, mut h) = serving("", 1, &[]);
    let mut c = Client::connect(proxy.client_addr());
    let r = c.request(b"GET /stream?ms=5 HTTP/1.0\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.framing, Framing::UntilClose, "{r:?}");
    assert!(!r.has_header("transfer-encoding"), "{r:?}");
    assert!(!r.has_header("x-swiftiply-close"), "{r:?}");
    assert_eq!(r.body, five_chunks().concat(), "{r:?}");
    // The backend connection itself stays pooled and serves on.
    let r = get_once(proxy.client_addr(), "app.test", "/hello");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(joined(&proxy), 1, "{}", proxy.stderr_text());
    h.assert_running();
    proxy.assert_alive();
}

#[test]
fn eight_connections_serve_eight_slow_requests_in_parallel() {
    if !rack_available("eight_connections_serve_eight_slow_requests_in_parallel") {
        return;
    }
    const N: usize = 8;
    const MS: u64 = 300;
    let (mut proxy, mut h) = serving("", N, &[]);
    assert!(
        eventually(SERVING_TIMEOUT, || joined(&proxy) >= N),
        "not all {N} connections joined:\n{}",
        proxy.stderr_text()
    );
    // Default ids: 8 hex digits of the pid, 4 of the connection index.
    for i in 0..N {
        let id = format!("{:08x}{i:04x}", h.pid());
        assert!(
            proxy
                .stderr_text()
                .contains(&format!("backend {id} joined section")),
            "no backend with id {id}:\n{}",
            proxy.stderr_text()
        );
    }

    let addr = proxy.client_addr();
    let started = Instant::now();
    let clients: Vec<_> = (0..N)
        .map(|_| thread::spawn(move || get_once(addr, "app.test", &format!("/slow?ms={MS}"))))
        .collect();
    for t in clients {
        let r = join_within(t, Duration::from_secs(30), "slow client");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body_str(), format!("slept {MS} ms\n"));
    }
    let took = started.elapsed();
    let serial = Duration::from_millis(MS * N as u64);
    assert!(
        took < serial / 2,
        "{N} requests of {MS} ms took {took:?}: not served in parallel (serially: {serial:?})"
    );
    h.assert_running();
    proxy.assert_alive();
}

#[test]
fn env_carries_the_request_and_remote_addr_from_x_forwarded_for() {
    if !rack_available("env_carries_the_request_and_remote_addr_from_x_forwarded_for") {
        return;
    }
    let (mut proxy, mut h) = serving("xforwardedfor: true", 1, &[]);
    let r = get_once(proxy.client_addr(), "app.test", "/env?a=1&b=two");
    assert_eq!(r.status, 200, "{r:?}");
    let text = r.body_str();
    for line in [
        "REQUEST_METHOD=GET",
        "PATH_INFO=/env",
        "QUERY_STRING=a=1&b=two",
        "HTTP_HOST=app.test",
        "REMOTE_ADDR=127.0.0.1",
        "SERVER_NAME=app.test",
        "SERVER_PORT=80",
        "SERVER_PROTOCOL=HTTP/1.1",
        "HTTP_X_FORWARDED_FOR=127.0.0.1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }

    // A client's own X-Forwarded-For does not become REMOTE_ADDR: the
    // address the proxy appended (the last one) does.
    let mut c = Client::connect(proxy.client_addr());
    let r = c.request(
        b"GET /env HTTP/1.1\r\nHost: app.test:8080\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
    );
    let text = r.body_str();
    for line in [
        "REMOTE_ADDR=127.0.0.1",
        "HTTP_X_FORWARDED_FOR=203.0.113.9, 127.0.0.1",
        "SERVER_NAME=app.test",
        "SERVER_PORT=8080",
        "QUERY_STRING=",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    h.assert_running();
    proxy.assert_alive();
}

#[test]
fn a_raising_route_gets_500_and_the_handler_keeps_serving() {
    if !rack_available("a_raising_route_gets_500_and_the_handler_keeps_serving") {
        return;
    }
    let (mut proxy, mut h) = serving("", 1, &[]);
    let mut c = Client::connect(proxy.client_addr());
    let r = c.get("app.test", "/boom");
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(r.body_str(), "Internal Server Error\n");
    assert!(!r.says_close(), "{r:?}");
    assert!(
        h.wait_for_log("boom: this route always fails", Duration::from_secs(5)),
        "the exception was not logged:\n{}",
        h.stderr_text()
    );
    // Same client connection, same (only) backend connection.
    let r = c.get("app.test", "/hello");
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.request(b"HEAD /boom HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    let r = c.get("app.test", "/hello");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(joined(&proxy), 1, "{}", proxy.stderr_text());
    h.assert_running();
    proxy.assert_alive();
}

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    if !rack_available("sigterm_finishes_the_request_in_flight_and_exits_0") {
        return;
    }
    let (mut proxy, mut h) = serving("", 2, &[]);
    assert!(eventually(SERVING_TIMEOUT, || joined(&proxy) >= 2));
    let addr = proxy.client_addr();
    let client = thread::spawn(move || get_once(addr, "app.test", "/slow?ms=1500"));
    assert!(
        h.wait_for_log("slow: start 1500 ms", Duration::from_secs(10)),
        "the slow request did not reach the app:\n{}",
        h.stderr_text()
    );
    let kill = Command::new("kill")
        .args(["-TERM", &h.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM failed: {kill}");

    let r = join_within(
        client,
        Duration::from_secs(20),
        "client of the slow request",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), "slept 1500 ms\n");
    let status = h
        .wait_exit(EXIT_TIMEOUT)
        .unwrap_or_else(|| panic!("no exit after SIGTERM:\n{}", h.stderr_text()));
    assert_eq!(status.code(), Some(0), "{status}:\n{}", h.stderr_text());
    assert!(h.stderr_text().contains("SIGTERM"), "{}", h.stderr_text());
    // Both connections were closed, so the proxy dropped them.
    assert!(
        eventually(Duration::from_secs(5), || proxy
            .stderr_text()
            .matches(" left section ")
            .count()
            >= 2),
        "{}",
        proxy.stderr_text()
    );
    proxy.assert_alive();
}

#[test]
fn keyed_section_takes_the_right_key_and_refuses_a_wrong_one() {
    if !rack_available("keyed_section_takes_the_right_key_and_refuses_a_wrong_one") {
        return;
    }
    let mut proxy = Proxy::start(&one_section("", "key: s3cret-key"));
    let addr = proxy.backend_addr(0).to_string();

    // Address and key from the classic environment switch.
    let mut good = RackHandler::spawn(
        &[
            "--connections".into(),
            "2".into(),
            "--id".into(),
            "rack keyed 1".into(),
        ],
        &[("SWIFTIPLY", &addr), ("SWIFTIPLY_KEY", "s3cret-key")],
        APP,
    );
    good.wait_serving(&proxy);
    assert!(
        proxy.wait_for_log(
            "backend rack keyed 1 joined section",
            Duration::from_secs(5)
        ),
        "{}",
        proxy.stderr_text()
    );

    let mut bad = RackHandler::start(
        proxy.backend_addr(0),
        1,
        &["--key", "s3cret-kez", "--id", "rackwrongkey"],
    );
    assert!(
        proxy.wait_for_log("wrong key", Duration::from_secs(10)),
        "the wrong key was not refused:\n{}",
        proxy.stderr_text()
    );
    bad.assert_running(); // refused, it keeps trying (with back-off)
    assert!(!proxy.stderr_text().contains("backend rackwrongkey joined"));
    let r = get_once(proxy.client_addr(), "app.test", "/hello");
    assert_eq!(r.status, 200, "{r:?}");
    good.assert_running();
    proxy.assert_alive();
}

#[test]
fn the_handler_reconnects_after_the_proxy_drops_its_connection() {
    if !rack_available("the_handler_reconnects_after_the_proxy_drops_its_connection") {
        return;
    }
    // A backend silent for backend_timeout gets the client a 504 and its
    // connection closed by the proxy.
    let mut proxy = Proxy::start(&one_section("backend_timeout: 1", ""));
    let mut h = RackHandler::start(proxy.backend_addr(0), 1, &[]);
    h.wait_serving(&proxy);
    let r = get_once(proxy.client_addr(), "app.test", "/slow?ms=2500");
    assert_eq!(r.status, 504, "{r:?}");
    assert!(
        proxy.wait_for_log(" left section ", Duration::from_secs(10)),
        "the proxy did not drop the backend:\n{}",
        proxy.stderr_text()
    );
    // When the app is done, the handler finds the connection gone and comes
    // back after 0.2–1.0 s.
    assert!(
        eventually(SERVING_TIMEOUT, || joined(&proxy) >= 2),
        "the handler did not reconnect:\n{}\nhandler:\n{}",
        proxy.stderr_text(),
        h.stderr_text()
    );
    assert!(
        h.stderr_text().contains("reconnecting"),
        "{}",
        h.stderr_text()
    );
    h.wait_serving(&proxy);
    h.assert_running();
    proxy.assert_alive();
}

#[test]
fn env_and_responses_pass_rack_lint() {
    if !rack_available("env_and_responses_pass_rack_lint") {
        return;
    }
    // The example app behind Rack::Lint, which checks every env the handler
    // builds and everything the handler does with the response.
    let dir = TempDir::new("rack-lint");
    let linted = dir.write(
        "config.ru",
        &format!(
            "app = Rack::Builder.parse_file({APP:?})\n\
             app = app.first if app.is_a?(Array)\n\
             use Rack::Lint\n\
             run app\n"
        ),
    );
    let mut proxy = Proxy::start(&one_section("", "xforwardedfor: true"));
    let args: Vec<String> = [
        "--connect",
        &proxy.backend_addr(0).to_string(),
        "--connections",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut h = RackHandler::spawn(&args, &[], &path_str(&linted));
    h.wait_serving(&proxy);

    let body = binary_body(5000);
    let mut post = format!(
        "POST /echo?x=1 HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    post.extend_from_slice(&body);
    let mut chunked =
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(b"3\r\nabc\r\n0\r\n\r\n");
    let requests: Vec<(Vec<u8>, u16)> = vec![
        (
            b"GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(),
            200,
        ),
        (
            b"GET /stream HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(),
            200,
        ),
        (
            b"HEAD /stream HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(),
            200,
        ),
        (
            b"GET /env?a=%20b HTTP/1.1\r\nHost: app.test:81\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n"
                .to_vec(),
            200,
        ),
        (post, 200),
        (chunked, 200),
        (
            b"GET /nowhere HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(),
            404,
        ),
        (
            b"GET http://app.test/hello?q HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(),
            200,
        ),
        (
            b"OPTIONS * HTTP/1.1\r\nHost: app.test\r\n\r\n".to_vec(),
            404,
        ),
        (b"GET /hello HTTP/1.0\r\n\r\n".to_vec(), 200),
    ];
    for (req, want) in &requests {
        let mut c = Client::connect(proxy.client_addr());
        let r = c.request(req);
        assert_eq!(
            r.status,
            *want,
            "{:?}: {r:?}\nhandler stderr:\n{}",
            String::from_utf8_lossy(&req[..req.len().min(80)]),
            h.stderr_text()
        );
    }
    assert!(
        !h.stderr_text().contains("LintError"),
        "Rack::Lint objected:\n{}",
        h.stderr_text()
    );
    h.assert_running();
    proxy.assert_alive();
}

/// Accepts one connection on `l` within `timeout` (the listener is
/// non-blocking); the stream comes back blocking, with test timeouts.
fn accept_within(l: &std::net::TcpListener, timeout: Duration) -> Option<Conn> {
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).expect("blocking stream");
                return Some(Conn::new(s));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return None;
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Reads the handshake a fresh connection starts with.
fn read_handshake(c: &mut Conn) -> String {
    let mut bytes = Vec::new();
    c.read_exact_body(25, &mut |b: &[u8]| bytes.extend_from_slice(b))
        .expect("25 handshake bytes");
    let n = usize::from_str_radix(&String::from_utf8_lossy(&bytes[23..25]), 16)
        .unwrap_or_else(|_| panic!("bad key length in {:?}", String::from_utf8_lossy(&bytes)));
    c.read_exact_body(n as u64, &mut |b: &[u8]| bytes.extend_from_slice(b))
        .expect("the key");
    String::from_utf8(bytes).expect("an ASCII handshake")
}

#[test]
fn speaks_the_backend_protocol_byte_for_byte_to_a_fake_proxy() {
    if !rack_available("speaks_the_backend_protocol_byte_for_byte_to_a_fake_proxy") {
        return;
    }
    // The test plays the proxy, to see exactly what goes over the wire.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("non-blocking listener");
    let addr = l.local_addr().unwrap();
    let h = RackHandler::start(addr, 1, &["--key", "k3y"]);
    let mut c = accept_within(&l, SERVING_TIMEOUT).expect("the handler connects");
    let pid_hex = format!("{:08x}", h.pid());
    assert_eq!(
        read_handshake(&mut c),
        format!("swiftclient{pid_hex}000003k3y")
    );

    // A streamed body in packet mode, then the terminator.
    c.write_all(b"GET /stream HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let head = read_response_head(&mut c).unwrap().expect("a response");
    assert_eq!(head.status, 200, "{head:?}");
    assert_eq!(head.header("x-swiftiply-close"), Some("1"), "{head:?}");
    assert_eq!(head.header("content-length"), None, "{head:?}");
    let body = c
        .read_until(b"--------", 1 << 16)
        .unwrap()
        .expect("packets");
    let want: String = (1..=5).map(|i| format!("00000008chunk {i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&body), format!("{want}--------"));

    // `Connection: close` concerns the client: the backend says nothing of
    // it and keeps its connection open.
    c.write_all(b"GET /hello HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = try_read_response(&mut c, false).expect("a response");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.raw_head,
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nContent-Length: 7\r\n\r\n"
    );
    assert_eq!(r.body, b"hello!\n");
    c.write_all(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
    let r = try_read_response(&mut c, false).expect("a response on the same connection");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        !c.is_closed(Duration::from_millis(200)),
        "the backend closed its connection"
    );

    // Not a request: the handler logs it, drops the connection and comes
    // back (after 0.2–1.0 s) with a fresh handshake.
    c.write_all(b"this is not HTTP\r\n\r\n").unwrap();
    assert!(
        c.is_closed(Duration::from_secs(10)),
        "the bad stream was not dropped"
    );
    let dropped = Instant::now();
    let mut c2 = accept_within(&l, SERVING_TIMEOUT).expect("the handler reconnects");
    assert!(
        dropped.elapsed() >= Duration::from_millis(150),
        "reconnected after {:?}: no pause",
        dropped.elapsed()
    );
    assert_eq!(
        read_handshake(&mut c2),
        format!("swiftclient{pid_hex}000003k3y")
    );
    assert!(
        h.wait_for_log("not a valid request", Duration::from_secs(5)),
        "{}",
        h.stderr_text()
    );
    c2.write_all(b"GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    let r = try_read_response(&mut c2, false).expect("a response after reconnecting");
    assert_eq!(r.body, b"hello!\n");
}
