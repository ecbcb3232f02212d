//! End-to-end tests of `swiftiply-bridge`: the real proxy, the real bridge,
//! and an upstream HTTP/1.1 server the test runs itself (std only: thread
//! per connection, keep-alive, Content-Length and chunked responses), plus
//! Python's `http.server` when python3 is installed.
//!
//! `--spawn` needs an application it can start as a separate process with
//! `PORT` set. Rather than depend on python3 or an example being built, it
//! starts this very test binary running only the ignored test
//! `child_upstream_server`, which serves the same upstream on `$PORT` when
//! `BRIDGE_TEST_CHILD` is set (and returns at once otherwise).
//!
//! Every process is killed on drop; every wait has a deadline.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BRIDGE: &str = env!("CARGO_BIN_EXE_swiftiply-bridge");
/// How long `Bridge::start` waits for `swiftiply-bridge: ready`.
const BRIDGE_READY: Duration = Duration::from_secs(20);
/// The pieces `/stream` sends, one chunk each, 100 ms apart.
const STREAM_CHUNKS: [&str; 5] = [
    "one\n",
    "two two\n",
    "three three three\n",
    "4\n",
    "five!\n",
];

// ---------------------------------------------------------------------------
// The upstream HTTP server
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Stats {
    accepted: AtomicUsize,
    slow_started: AtomicUsize,
}

/// A small HTTP/1.1 application server on 127.0.0.1. Routes:
/// `/hello` (GET/HEAD, Content-Length, with hop-by-hop headers to strip),
/// `/head-echo` (the request head as the body), `/stream` (chunked, five
/// chunks 100 ms apart), `POST /echo` (the body back, with its length and
/// hash), `/slow?ms=N`, `/no-content` (204), `/until-close` (close-delimited
/// body), `/garbage` (not HTTP), `/cut` (closes mid-body).
struct Upstream {
    port: u16,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    stats: Arc<Stats>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Upstream {
    fn start() -> Upstream {
        Upstream::start_with(0, None)
    }

    /// `port` 0 for any free one; `idle_close`: close a keep-alive
    /// connection, without a word, when no request comes within that time.
    fn start_with(port: u16, idle_close: Option<Duration>) -> Upstream {
        Upstream::launch(port, idle_close, false)
    }

    /// Answers only the first request on each connection: the next one is
    /// read and the connection closed without a word — the race where an
    /// upstream closes a keep-alive connection just as a request is sent.
    fn start_one_per_connection() -> Upstream {
        Upstream::launch(0, None, true)
    }

    fn launch(port: u16, idle_close: Option<Duration>, one_per_conn: bool) -> Upstream {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("upstream bind {port}: {e}; retrying");
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("upstream cannot bind port {port}: {e}"),
            }
        };
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let stats = Arc::new(Stats::default());
        let accept = {
            let (stop, conns, stats) = (stop.clone(), conns.clone(), stats.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((sock, _)) => {
                            sock.set_nonblocking(false).unwrap();
                            stats.accepted.fetch_add(1, Ordering::SeqCst);
                            if let Ok(clone) = sock.try_clone() {
                                conns.lock().unwrap().push(clone);
                            }
                            let stats = stats.clone();
                            thread::spawn(move || {
                                serve(sock, port, idle_close, one_per_conn, &stats)
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Upstream {
            port,
            stop,
            conns,
            stats,
            accept: Some(accept),
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn accepted(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// Stops listening (the port is free again afterwards) and cuts every
    /// connection, as a crashed server would.
    fn kill(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.kill();
    }
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn serve(
    sock: TcpStream,
    port: u16,
    idle_close: Option<Duration>,
    one_per_conn: bool,
    stats: &Stats,
) {
    let mut conn = Conn::new(sock);
    serve_conn(&mut conn, port, idle_close, one_per_conn, stats);
    // `Upstream::conns` holds a clone of the socket: make the close real.
    let _ = conn.stream.shutdown(std::net::Shutdown::Both);
}

fn serve_conn(
    conn: &mut Conn,
    port: u16,
    idle_close: Option<Duration>,
    one_per_conn: bool,
    stats: &Stats,
) {
    let mut served = 0;
    loop {
        if let Some(t) = idle_close {
            let _ = conn.stream.set_read_timeout(Some(t));
        }
        let head = match read_request_head(conn) {
            Ok(Some(h)) => h,
            _ => return, // closed, timed out (idle_close) or broken
        };
        if head.target == "/reject" {
            // Answers without reading the body, then stops reading for a
            // while (the body piles up in the socket buffers).
            let _ = conn.write_all(
                b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 9\r\n\r\ntoo big!\n",
            );
            thread::sleep(Duration::from_secs(3));
            return;
        }
        let Ok(req) = read_request_body(conn, head) else {
            return;
        };
        served += 1;
        if one_per_conn && served > 1 {
            return;
        }
        let _ = conn.stream.set_read_timeout(Some(IO_TIMEOUT));
        let close = has_token(&req.headers, "connection", "close")
            || (req.version == "HTTP/1.0" && !has_token(&req.headers, "connection", "keep-alive"));
        let conn_line = if close { "Connection: close\r\n" } else { "" };
        let path = req.target.split('?').next().unwrap_or("");
        let mut out: Vec<u8> = Vec::new();
        match path {
            "/hello" => {
                let body = format!("hello from {port}\n");
                out.extend_from_slice(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Upstream-Port: {port}\r\n\
                         Keep-Alive: timeout=30\r\nX-Hop: secret\r\nConnection: X-Hop\r\n{conn_line}\
                         Content-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                );
                if req.method != "HEAD" {
                    out.extend_from_slice(body.as_bytes());
                }
            }
            "/head-echo" => {
                out.extend_from_slice(
                    format!(
                        "HTTP/1.1 200 OK\r\n{conn_line}Content-Length: {}\r\n\r\n",
                        req.head.len()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(&req.head);
            }
            "/echo" => {
                let chunked = req.header("transfer-encoding").is_some();
                out.extend_from_slice(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                         X-Body-Len: {}\r\nX-Body-Hash: {:016x}\r\nX-Request-Chunked: {chunked}\r\n\
                         {conn_line}Content-Length: {}\r\n\r\n",
                        req.body.len(),
                        fnv(&req.body),
                        req.body.len()
                    )
                    .as_bytes(),
                );
                if conn.write_all(&out).is_err() || conn.write_all(&req.body).is_err() {
                    return;
                }
                out.clear();
            }
            "/stream" => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{conn_line}Transfer-Encoding: chunked\r\n\r\n"
                );
                if conn.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for (i, c) in STREAM_CHUNKS.iter().enumerate() {
                    if i > 0 {
                        thread::sleep(Duration::from_millis(100));
                    }
                    if conn
                        .write_all(format!("{:x}\r\n{c}\r\n", c.len()).as_bytes())
                        .is_err()
                    {
                        return;
                    }
                }
                out.extend_from_slice(b"0\r\n\r\n");
            }
            "/slow" => {
                stats.slow_started.fetch_add(1, Ordering::SeqCst);
                let ms: u64 = req
                    .target
                    .split("ms=")
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(500);
                thread::sleep(Duration::from_millis(ms));
                let body = format!("slow done on {port}\n");
                out.extend_from_slice(
                    format!(
                        "HTTP/1.1 200 OK\r\nX-Upstream-Port: {port}\r\n{conn_line}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
            }
            "/no-content" => {
                out.extend_from_slice(
                    format!("HTTP/1.1 204 No Content\r\n{conn_line}\r\n").as_bytes(),
                );
            }
            "/until-close" => {
                let _ =
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ");
                thread::sleep(Duration::from_millis(50));
                let _ = conn.write_all(b"close body");
                return;
            }
            "/packets" => {
                // Packet mode (X-Swiftiply-Close), as a classic backend sends it.
                let _ =
                    conn.write_all(b"HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\n\r\n00000003abc");
                thread::sleep(Duration::from_millis(50));
                out.extend_from_slice(b"00000002de00000000--------");
            }
            "/garbage" => {
                let _ = conn.write_all(b"this is not HTTP at all\r\n\r\n");
                return;
            }
            "/cut" => {
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b");
                thread::sleep(Duration::from_millis(50));
                return;
            }
            _ => {
                out.extend_from_slice(
                    format!("HTTP/1.1 404 Not Found\r\n{conn_line}Content-Length: 10\r\n\r\nnot found\n").as_bytes(),
                );
            }
        }
        if conn.write_all(&out).is_err() || close {
            return;
        }
    }
}

/// Not a test of its own: the application copy `--spawn` starts in
/// `spawn_starts_copies_on_distinct_ports_and_stops_them` (this binary,
/// run with `--ignored --exact child_upstream_server`). Without
/// `BRIDGE_TEST_CHILD` and `PORT` in the environment it returns at once.
#[test]
#[ignore = "the application copy the --spawn test starts; does nothing by itself"]
fn child_upstream_server() {
    let (Some(_), Ok(port)) = (std::env::var_os("BRIDGE_TEST_CHILD"), std::env::var("PORT")) else {
        return;
    };
    let port: u16 = port.parse().expect("PORT is a port number");
    let _up = Upstream::start_with(port, None);
    // Until the bridge stops us; never longer than a minute.
    thread::sleep(Duration::from_secs(60));
}

// ---------------------------------------------------------------------------
// The bridge process
// ---------------------------------------------------------------------------

/// A running `swiftiply-bridge`; killed on drop (its stderr is printed if
/// the test failed).
struct Bridge {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Bridge {
    fn start(args: &[&str]) -> Bridge {
        Bridge::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Bridge {
        let mut child = Command::new(BRIDGE)
            .args(args)
            .env("RUST_LOG", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BRIDGE}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = lines.clone();
            let err = child.stderr.take().unwrap();
            thread::spawn(move || {
                for l in BufReader::new(err).lines() {
                    match l {
                        Ok(l) => lines.lock().unwrap().push(l),
                        Err(_) => break,
                    }
                }
            });
        }
        let mut b = Bridge { child, lines };
        let deadline = Instant::now() + BRIDGE_READY;
        while !b.has_log("swiftiply-bridge: ready") {
            if let Ok(Some(status)) = b.child.try_wait() {
                thread::sleep(Duration::from_millis(100));
                panic!(
                    "the bridge exited ({status}) before it was ready:\n{}",
                    b.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the bridge was not ready within {BRIDGE_READY:?}:\n{}",
                b.stderr_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
        b
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn stderr_text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn has_log(&self, s: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.contains(s))
    }

    fn wait_for_log(&self, s: &str, timeout: Duration) -> bool {
        eventually(timeout, || self.has_log(s))
    }

    fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(s)) = self.child.try_wait() {
            thread::sleep(Duration::from_millis(100));
            panic!("the bridge exited ({s}):\n{}", self.stderr_text());
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- swiftiply-bridge stderr ----\n{}\n---- end ----",
                self.stderr_text()
            );
        }
    }
}

/// Runs the bridge to completion (for argument errors and --help).
fn bridge_cli(args: &[&str]) -> (Option<i32>, String, String) {
    let mut child = Command::new(BRIDGE)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("swiftiply-bridge {args:?} did not exit");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), out, err)
}

/// A proxy with one default section, and a bridge in front of `upstreams`.
fn proxy_and_bridge(upstreams: &[&Upstream], extra: &[&str]) -> (Proxy, Bridge) {
    let proxy = Proxy::start(&one_section("", ""));
    let backend = proxy.backend_addr(0).to_string();
    let mut args = vec!["--connect".to_string(), backend];
    for u in upstreams {
        args.push("--upstream".into());
        args.push(u.addr());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let bridge = Bridge::start(&args);
    (proxy, bridge)
}

fn get(addr: SocketAddr, path: &str) -> Response {
    get_once(addr, "app.test", path)
}

/// A port P such that P and P+1 are both free right now.
fn two_free_ports() -> u16 {
    for _ in 0..100 {
        let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let p = a.local_addr().unwrap().port();
        if p < 65535 && TcpListener::bind((Ipv4Addr::LOCALHOST, p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised command name; Z is a zombie.
        Ok(s) => s
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z')),
    }
}

/// Kills the listed processes on drop (cleanup if a test fails midway).
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if !process_gone(pid) {
                // SAFETY: plain kill(2) of a process this test started (indirectly).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

fn vm_hwm_kb(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn forwards_requests_and_reuses_upstream_connections() {
    let up = Upstream::start();
    let proxy = Proxy::start(&one_section("", "key: sekrit"));
    let _bridge = Bridge::start(&[
        "--connect",
        &proxy.backend_addr(0).to_string(),
        "--key",
        "sekrit",
        "--connections",
        "2",
        "--upstream",
        &up.addr(),
    ]);
    let addr = proxy.client_addr();
    let mut c = Client::connect(addr);
    for _ in 0..10 {
        let r = c.get("app.test", "/hello");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body_str(), format!("hello from {}\n", up.port));
        assert_eq!(
            r.header("x-upstream-port"),
            Some(up.port.to_string().as_str())
        );
        assert_eq!(r.header("content-type"), Some("text/plain"));
        // Hop-by-hop headers of the upstream hop are not passed on.
        for hop in ["keep-alive", "x-hop", "connection"] {
            assert!(!r.has_header(hop), "{hop} was passed through: {r:?}");
        }
    }
    // One connection per bridge connection at most (a request may be
    // dispatched to the other one before the first has returned its
    // upstream connection to the pool), plus the bridge's start-up probe.
    assert!(
        up.accepted() <= 3,
        "10 sequential requests used {} upstream connections",
        up.accepted()
    );

    // The request head reaches the upstream byte for byte.
    let head = "GET /head-echo?q=1 HTTP/1.1\r\nHost: app.test\r\nX-Odd:   spaced  value \r\nx-lower-case: v\r\nAccept: */*\r\n\r\n";
    let r = c.request(head.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), head);

    // HEAD keeps the length a GET would have, without a body.
    let r = c.request(b"HEAD /hello HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-length"),
        Some(
            format!("hello from {}\n", up.port)
                .len()
                .to_string()
                .as_str()
        )
    );
    assert!(r.body.is_empty());

    let r = c.get("app.test", "/no-content");
    assert_eq!(r.status, 204, "{r:?}");
    let r = c.get("app.test", "/nope");
    assert_eq!((r.status, r.body_str().as_str()), (404, "not found\n"));

    // A close-delimited upstream body reaches the client intact, and the
    // client connection carries on.
    let r = c.get("app.test", "/until-close");
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "until close body"),
        "{r:?}"
    );
    assert_eq!(c.get("app.test", "/hello").status, 200);

    // A client's `Connection: close` ends that exchange's upstream connection
    // only; the next requests work as before.
    let before = up.accepted();
    let r = c.request(b"GET /hello HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        c.is_closed(Duration::from_secs(5)),
        "the proxy should close after Connection: close"
    );
    let mut c = Client::connect(addr);
    for _ in 0..5 {
        assert_eq!(c.get("app.test", "/hello").status, 200);
    }
    assert!(
        up.accepted() <= before + 2,
        "accepted {} (was {before})",
        up.accepted()
    );

    // An HTTP/1.0 client.
    let mut c10 = Client::connect(addr);
    let r = c10.request(b"GET /hello HTTP/1.0\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), format!("hello from {}\n", up.port));
}

#[test]
fn large_bodies_stream_through_with_bounded_memory() {
    let up = Upstream::start();
    let (proxy, bridge) = proxy_and_bridge(&[&up], &[]);
    let addr = proxy.client_addr();
    let before = vm_hwm_kb(bridge.pid());

    let body: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut c = Client::connect(addr);
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = c.request(&req);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-body-len"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(
        r.header("x-body-hash"),
        Some(format!("{:016x}", fnv(&body)).as_str())
    );
    assert_eq!(r.header("x-request-chunked"), Some("false"));
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body, "the echoed body differs");

    // A chunked request body is re-sent chunked, the same bytes.
    let part = &body[..1024 * 1024 + 17];
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in part.chunks(37 * 1024) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\nX-Trailer: dropped\r\n\r\n");
    let r = c.request(&req);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-request-chunked"), Some("true"));
    assert_eq!(
        r.header("x-body-len"),
        Some(part.len().to_string().as_str())
    );
    assert_eq!(
        r.header("x-body-hash"),
        Some(format!("{:016x}", fnv(part)).as_str())
    );

    // 10 MB went through twice (up and down); the bridge never held it.
    let after = vm_hwm_kb(bridge.pid());
    eprintln!("bridge peak RSS: {before} KiB before, {after} KiB after");
    assert!(
        after < before + 6 * 1024,
        "the bridge's peak RSS grew from {before} KiB to {after} KiB relaying 10 MB"
    );
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let up = Upstream::start();
    let (proxy, _bridge) = proxy_and_bridge(&[&up], &[]);
    let mut c = Client::connect(proxy.client_addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    let interim = c.read_response(false);
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"hello");
    let r = c.read_response(false);
    assert_eq!((r.status, r.body_str().as_str()), (200, "hello"), "{r:?}");
}

/// Reads a chunked body from `c`, one entry per chunk, with when each came.
fn read_chunks(c: &mut Client) -> Vec<(Vec<u8>, Instant)> {
    let mut chunks = Vec::new();
    loop {
        let line = c.conn.read_line(100).expect("chunk-size line");
        let size = usize::from_str_radix(std::str::from_utf8(&line).unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk-size line {line:?}"));
        if size == 0 {
            assert_eq!(c.conn.read_line(100).unwrap(), b"", "no trailers expected");
            return chunks;
        }
        let mut data = Vec::new();
        c.conn
            .read_exact_body(size as u64, &mut |b: &[u8]| data.extend_from_slice(b))
            .unwrap();
        assert_eq!(
            c.conn.read_line(0).unwrap(),
            b"",
            "chunk data not followed by CRLF"
        );
        chunks.push((data, Instant::now()));
    }
}

#[test]
fn a_chunked_upstream_response_stays_chunked_and_streamed() {
    let up = Upstream::start();
    let (proxy, _bridge) = proxy_and_bridge(&[&up], &[]);
    let mut c = Client::connect(proxy.client_addr());
    for _ in 0..2 {
        c.send(b"GET /stream HTTP/1.1\r\nHost: app.test\r\n\r\n");
        let head = read_response_head(&mut c.conn)
            .unwrap()
            .expect("a response head");
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("transfer-encoding"),
            Some("chunked"),
            "{head:?}"
        );
        assert_eq!(head.header("content-length"), None);
        let chunks = read_chunks(&mut c);
        let got: Vec<&[u8]> = chunks.iter().map(|(d, _)| d.as_slice()).collect();
        let want: Vec<&[u8]> = STREAM_CHUNKS.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(got, want, "the chunks' bytes differ");
        // Streamed: the first chunk arrived well before the last was sent.
        let spread = chunks.last().unwrap().1 - chunks[0].1;
        assert!(
            spread >= Duration::from_millis(250),
            "chunks arrived together ({spread:?})"
        );
    }
    // An HTTP/1.0 client gets the same bytes, delimited by close.
    let mut c = Client::connect(proxy.client_addr());
    let r = c.request(b"GET /stream HTTP/1.0\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), STREAM_CHUNKS.concat());
}

#[test]
fn upstream_failures_give_502_and_the_bridge_recovers() {
    let mut up = Upstream::start();
    let port = up.port;
    let (proxy, mut bridge) = proxy_and_bridge(&[&up], &[]);
    let addr = proxy.client_addr();
    assert_eq!(get(addr, "/hello").status, 200);

    // Garbage instead of a response.
    let r = get(addr, "/garbage");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(!r.body.is_empty() && r.body.len() < 200, "{r:?}");
    bridge.assert_alive();
    assert_eq!(get(addr, "/hello").status, 200);

    // The upstream dies in the middle of a body: the client sees a cut
    // response (never a complete-looking one), and the bridge goes on.
    let mut c = Client::connect(addr);
    c.send(b"GET /cut HTTP/1.1\r\nHost: app.test\r\n\r\n");
    match c.try_read_response(false) {
        Ok(r) => panic!("a cut body arrived as a complete response: {r:?}"),
        Err(e) => {
            if let Some(p) = &e.partial {
                assert_eq!(p.status, 200);
            }
        }
    }
    bridge.assert_alive();
    assert_eq!(get(addr, "/hello").status, 200);

    // The upstream goes away entirely.
    up.kill();
    for _ in 0..3 {
        let r = get(addr, "/hello");
        assert_eq!(r.status, 502, "{r:?}");
        assert!(r.body_str().contains("Bad Gateway"), "{r:?}");
    }
    bridge.assert_alive();

    // ...and comes back on the same port: served at once.
    let _up = Upstream::start_with(port, None);
    let r = get(addr, "/hello");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), format!("hello from {port}\n"));
    bridge.assert_alive();
}

#[test]
fn an_upstream_that_answers_before_reading_the_body_is_relayed() {
    let up = Upstream::start();
    let (proxy, mut bridge) = proxy_and_bridge(&[&up], &[]);
    let len = 32 * 1024 * 1024;
    let mut c = Client::connect(proxy.client_addr());
    c.send(
        format!("POST /reject HTTP/1.1\r\nHost: app.test\r\nContent-Length: {len}\r\n\r\n")
            .as_bytes(),
    );
    let writer = {
        let mut s = c.conn.stream.try_clone().unwrap();
        // The proxy may close once the answer is out; a failed write is fine.
        thread::spawn(move || {
            let block = vec![b'x'; 1 << 20];
            for _ in 0..len >> 20 {
                if s.write_all(&block).is_err() {
                    break;
                }
            }
        })
    };
    let started = Instant::now();
    let r = c.read_response(false);
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (413, "too big!\n"),
        "{r:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the early answer waited for the upstream ({:?})",
        started.elapsed()
    );
    join_within(writer, Duration::from_secs(20), "body writer");
    bridge.assert_alive();
    assert_eq!(get(proxy.client_addr(), "/hello").status, 200);
}

#[test]
fn packet_mode_toward_the_proxy_and_from_an_upstream() {
    let up = Upstream::start();
    // The bridge frames its streamed responses as packets (for classic
    // proxies); this proxy turns them back into chunks for the client.
    let (proxy, _bridge) = proxy_and_bridge(&[&up], &["--framing", "packets"]);
    let mut c = Client::connect(proxy.client_addr());
    let r = c.get("app.test", "/stream");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.framing, Framing::Chunked, "{r:?}");
    assert_eq!(r.body_str(), STREAM_CHUNKS.concat());
    assert!(!r.has_header("x-swiftiply-close"), "{r:?}");
    // An upstream that itself answers in packet mode is decoded.
    let r = c.get("app.test", "/packets");
    assert_eq!((r.status, r.body_str().as_str()), (200, "abcde"), "{r:?}");
    assert_eq!(c.get("app.test", "/hello").status, 200);
}

#[test]
fn a_silent_upstream_gives_504() {
    let up = Upstream::start();
    let (proxy, mut bridge) = proxy_and_bridge(&[&up], &["--timeout", "0.5"]);
    let r = get(proxy.client_addr(), "/slow?ms=2000");
    assert_eq!(r.status, 504, "{r:?}");
    bridge.assert_alive();
    assert_eq!(get(proxy.client_addr(), "/hello").status, 200);
}

#[test]
fn stale_pooled_connections_do_not_cause_502() {
    // This upstream closes idle keep-alive connections after 150 ms,
    // without a word, as many application servers do.
    let up = Upstream::start_with(0, Some(Duration::from_millis(150)));
    let (proxy, _bridge) = proxy_and_bridge(&[&up], &["--connections", "1"]);
    let mut c = Client::connect(proxy.client_addr());
    for i in 0..4 {
        let r = c.get("app.test", "/hello");
        assert_eq!(r.status, 200, "round {i}: {r:?}");
        let r = c.request(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "abc"),
            "round {i}: {r:?}"
        );
        thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_pooled_connection_closed_under_a_request_is_retried_once() {
    let up = Upstream::start_one_per_connection();
    let (proxy, bridge) = proxy_and_bridge(&[&up], &["--connections", "1"]);
    let mut c = Client::connect(proxy.client_addr());
    for i in 0..4 {
        let r = c.get("app.test", "/hello");
        assert_eq!(r.status, 200, "GET {i}: {r:?}");
        // No body bytes: still safe to send again.
        let r = c.request(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(r.status, 200, "POST {i}: {r:?}");
    }
    assert!(
        bridge.has_log("retrying on a new one"),
        "the retry path was not taken:\n{}",
        bridge.stderr_text()
    );
}

#[test]
fn requests_go_to_the_least_busy_upstream() {
    let a = Upstream::start();
    let b = Upstream::start();
    let (proxy, _bridge) = proxy_and_bridge(&[&a, &b], &["--connections", "4"]);
    let addr = proxy.client_addr();
    // Sequential requests alternate between idle upstreams.
    let mut seen = Vec::new();
    for _ in 0..4 {
        let r = get(addr, "/hello");
        seen.push(r.header("x-upstream-port").unwrap().to_string());
    }
    for u in [&a, &b] {
        let n = seen.iter().filter(|p| **p == u.port.to_string()).count();
        assert_eq!(n, 2, "{seen:?}");
    }
    // Two at once go to different upstreams.
    let slow = |addr| thread::spawn(move || get(addr, "/slow?ms=600"));
    let t1 = slow(addr);
    assert!(eventually(Duration::from_secs(5), || {
        a.stats.slow_started.load(Ordering::SeqCst) + b.stats.slow_started.load(Ordering::SeqCst)
            == 1
    }));
    let t2 = slow(addr);
    let r1 = join_within(t1, Duration::from_secs(10), "slow 1");
    let r2 = join_within(t2, Duration::from_secs(10), "slow 2");
    assert_eq!((r1.status, r2.status), (200, 200));
    assert_ne!(r1.header("x-upstream-port"), r2.header("x-upstream-port"));
}

#[test]
fn sigterm_drains_the_request_in_flight_then_exits_zero() {
    let up = Upstream::start();
    let (proxy, mut bridge) = proxy_and_bridge(&[&up], &[]);
    let addr = proxy.client_addr();
    let t = thread::spawn(move || get(addr, "/slow?ms=1500"));
    assert!(
        eventually(Duration::from_secs(5), || up
            .stats
            .slow_started
            .load(Ordering::SeqCst)
            == 1),
        "the slow request never reached the upstream"
    );
    bridge.signal(libc::SIGTERM);
    assert!(
        bridge.wait_for_log("stopping", Duration::from_secs(2)),
        "{}",
        bridge.stderr_text()
    );
    assert!(
        bridge.child.try_wait().unwrap().is_none(),
        "exited with a request in flight"
    );
    let r = join_within(t, Duration::from_secs(10), "slow request");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), format!("slow done on {}\n", up.port));
    let status = bridge
        .wait_exit(Duration::from_secs(5))
        .expect("the bridge did not exit");
    assert_eq!(status.code(), Some(0), "{}", bridge.stderr_text());
}

#[test]
fn a_second_signal_exits_at_once() {
    let up = Upstream::start();
    let (proxy, mut bridge) = proxy_and_bridge(&[&up], &[]);
    let addr = proxy.client_addr();
    let t = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(b"GET /slow?ms=4000 HTTP/1.1\r\nHost: app.test\r\n\r\n");
        c.try_read_response(false).map(|r| r.status).ok()
    });
    assert!(eventually(Duration::from_secs(5), || {
        up.stats.slow_started.load(Ordering::SeqCst) == 1
    }));
    bridge.signal(libc::SIGTERM);
    assert!(bridge.wait_for_log("stopping", Duration::from_secs(2)));
    bridge.signal(libc::SIGTERM);
    let status = bridge
        .wait_exit(Duration::from_secs(2))
        .expect("the second signal did not end the bridge");
    assert_eq!(status.code(), Some(1), "{}", bridge.stderr_text());
    // The cut request is the proxy's to answer; it must not hang.
    let _ = join_within(t, Duration::from_secs(15), "client");
}

#[test]
fn serves_two_proxies_at_once() {
    let up = Upstream::start();
    let p1 = Proxy::start(&one_section("", ""));
    let p2 = Proxy::start(&one_section("", ""));
    let _bridge = Bridge::start(&[
        "--connect",
        &p1.backend_addr(0).to_string(),
        "--connect",
        &p2.backend_addr(0).to_string(),
        "--connections",
        "2",
        "--upstream",
        &up.addr(),
    ]);
    for p in [&p1, &p2] {
        for _ in 0..3 {
            let r = get(p.client_addr(), "/hello");
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.body_str(), format!("hello from {}\n", up.port));
        }
    }
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn spawn_starts_copies_on_distinct_ports_and_stops_them() {
    let proxy = Proxy::start(&one_section("", ""));
    let base = two_free_ports();
    let tmp = TempDir::new("bridge-spawn");
    let pid_dir: PathBuf = tmp.path.join("pids");
    let exe = std::env::current_exe().unwrap();
    let command = format!(
        "exec '{}' --exact child_upstream_server --ignored --nocapture --test-threads=1",
        exe.display()
    );
    let mut bridge = Bridge::start_with_env(
        &[
            "--connect",
            &proxy.backend_addr(0).to_string(),
            "--connections",
            "2",
            "--spawn",
            &command,
            "-n",
            "2",
            "--port-base",
            &base.to_string(),
            "--pid-dir",
            &path_str(&pid_dir),
        ],
        &[("BRIDGE_TEST_CHILD", "1")],
    );
    let files = [pid_dir.join("app-0.pid"), pid_dir.join("app-1.pid")];
    let pids: Vec<i32> = files.iter().map(|f| read_pid(f)).collect();
    let mut guard = KillOnDrop(pids.clone());
    for &pid in &pids {
        assert!(!process_gone(pid), "app pid {pid} is not running");
    }

    // Both copies answer through the proxy.
    let want = [base.to_string(), (base + 1).to_string()];
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = get(proxy.client_addr(), "/hello");
        assert_eq!(r.status, 200, "{r:?}");
        seen.push(r.header("x-upstream-port").unwrap().to_string());
    }
    for p in &want {
        assert!(seen.contains(p), "port {p} never answered: {seen:?}");
    }

    // A copy that dies is logged and started again.
    unsafe {
        libc::kill(pids[0], libc::SIGKILL);
    }
    assert!(
        bridge.wait_for_log(
            &format!("app 0 (pid {}, port {base}) exited", pids[0]),
            Duration::from_secs(5)
        ),
        "{}",
        bridge.stderr_text()
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            std::fs::read_to_string(&files[0])
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .is_some_and(|p| p != pids[0])
        }),
        "app 0 was not restarted:\n{}",
        bridge.stderr_text()
    );
    let restarted = read_pid(&files[0]);
    guard.0.push(restarted);
    assert!(
        eventually(Duration::from_secs(10), || TcpStream::connect((
            Ipv4Addr::LOCALHOST,
            base
        ))
        .is_ok()),
        "the restarted copy never listened"
    );

    // SIGTERM: the bridge stops the copies, removes the pid files, exits 0.
    bridge.signal(libc::SIGTERM);
    let status = bridge
        .wait_exit(Duration::from_secs(15))
        .expect("the bridge did not exit");
    assert_eq!(status.code(), Some(0), "{}", bridge.stderr_text());
    for f in &files {
        assert!(!f.exists(), "{} is still there", f.display());
    }
    assert!(
        !pid_dir.exists(),
        "the pid directory the bridge made is still there"
    );
    for pid in [restarted, pids[1]] {
        assert!(
            eventually(Duration::from_secs(2), || process_gone(pid)),
            "app pid {pid} outlived the bridge"
        );
    }
}

/// A `python3 -m http.server` serving `dir` on a free port; killed on drop.
struct Python {
    child: Child,
    port: u16,
}

impl Python {
    fn start(dir: &Path) -> Option<Python> {
        let ok = Command::new("python3")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let port = two_free_ports();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let py = Python { child, port };
        assert!(
            eventually(Duration::from_secs(10), || TcpStream::connect((
                Ipv4Addr::LOCALHOST,
                port
            ))
            .is_ok()),
            "python3 -m http.server never listened on {port}"
        );
        Some(py)
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn python_http_server_behind_the_bridge() {
    let tmp = TempDir::new("bridge-python");
    let text = "a file served by python's http.server\n".repeat(100);
    tmp.write("hello.txt", &text);
    let Some(py) = Python::start(&tmp.path) else {
        eprintln!("SKIPPED python_http_server_behind_the_bridge: python3 is not installed");
        return;
    };
    let proxy = Proxy::start(&one_section("", ""));
    let _bridge = Bridge::start(&[
        "--connect",
        &proxy.backend_addr(0).to_string(),
        "--upstream",
        &format!("127.0.0.1:{}", py.port),
    ]);
    // http.server answers HTTP/1.0 and closes: the bridge must not reuse
    // those connections, while the client's keep-alive connection stays.
    let mut c = Client::connect(proxy.client_addr());
    for _ in 0..3 {
        let r = c.get("app.test", "/hello.txt");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body_str(), text);
    }
    let r = c.request(b"HEAD /hello.txt HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("content-length"),
        Some(text.len().to_string().as_str())
    );
    let r = c.get("app.test", "/missing.txt");
    assert_eq!(r.status, 404, "{r:?}");
    let r = c.get("app.test", "/");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_contains("hello.txt"), "{r:?}");
}

#[test]
fn command_line_help_and_errors() {
    let (code, out, _) = bridge_cli(&["--help"]);
    assert_eq!(code, Some(0));
    for opt in [
        "--connect",
        "--upstream",
        "--spawn",
        "--pid-dir",
        "--connections",
    ] {
        assert!(out.contains(opt), "usage lacks {opt}:\n{out}");
    }
    let (code, out, _) = bridge_cli(&["--version"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("swiftiply-bridge "), "{out}");
    for (args, says) in [
        (&[][..], "--connect"),
        (&["--connect", "127.0.0.1:1"], "--upstream"),
        (
            &[
                "--connect",
                "127.0.0.1:1",
                "--upstream",
                "127.0.0.1:2",
                "--bogus",
            ],
            "--bogus",
        ),
        (
            &["--connect", "127.0.0.1:1", "--upstream", "nope"],
            "HOST:PORT",
        ),
        (
            &["--connect", "127.0.0.1:1", "--spawn", "true", "-n", "x"],
            "-n",
        ),
    ] {
        let (code, _, err) = bridge_cli(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(
            err.contains(says),
            "{args:?}: stderr does not mention {says}:\n{err}"
        );
        assert!(err.contains("usage:"), "{args:?}: no usage:\n{err}");
    }
}

/// The bridge's own writes never block it: a client that reads slowly gets
/// the whole streamed body.
#[test]
fn a_slow_reader_gets_everything() {
    let up = Upstream::start();
    let (proxy, _bridge) = proxy_and_bridge(&[&up], &[]);
    let body: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let mut s = TcpStream::connect(proxy.client_addr()).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let writer = {
        let mut s = s.try_clone().unwrap();
        thread::spawn(move || s.write_all(&req))
    };
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(30);
    let total = loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            if got.len() >= i + 4 + body.len() {
                break i + 4;
            }
        }
        assert!(Instant::now() < deadline, "too slow");
        thread::sleep(Duration::from_millis(2));
    };
    join_within(writer, Duration::from_secs(10), "writer").unwrap();
    assert!(got[total..] == body[..], "the echoed body differs");
}
