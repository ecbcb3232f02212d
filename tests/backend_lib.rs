//! The Rust backend library (`swiftiply::backend`) through the real proxy:
//! fixed and streamed responses, large bodies, a proxy restart, graceful
//! stop with a request in flight, and garbage from the proxy side; and its
//! plain HTTP server (`serve_http`), which refuses the requests the proxy
//! refuses, with the same status.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use swiftiply::backend::{self, BackendOptions, Request, Responder, StreamFraming};

const T: Duration = Duration::from_secs(10);

fn handler(req: &mut Request<'_>, res: &mut Responder<'_>) -> std::io::Result<()> {
    match req.path() {
        "/hello" => res.send(
            200,
            &[("Content-Type", "text/plain"), ("X-Id", "lib")],
            b"hello\n",
        ),
        "/stream" => {
            let mut w = res.stream(200, &[("Content-Type", "text/plain")])?;
            for i in 0..4 {
                write!(w, "part {i};")?;
            }
            w.finish()
        }
        "/echo" => {
            let mut body = Vec::new();
            req.body().read_to_end(&mut body)?;
            res.send(200, &[], &body)
        }
        "/slow" => {
            thread::sleep(Duration::from_millis(600));
            res.send(200, &[], b"slow done")
        }
        "/panic" => panic!("handler panics on purpose"),
        _ => res.send(404, &[], b"no such route\n"),
    }
}

/// GETs `path` until it answers 200 (the backend has joined) or the deadline.
fn wait_served(addr: SocketAddr, path: &str) -> Response {
    let deadline = Instant::now() + T;
    loop {
        let r = get_once(addr, "app.test", path);
        if r.status == 200 || Instant::now() > deadline {
            return r;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn fixed_and_streamed_responses_in_both_framings() {
    for framing in [StreamFraming::Chunked, StreamFraming::Packets] {
        let p = Proxy::start(&one_section("timeout: 5", ""));
        let opts = BackendOptions::new(vec![p.backend_addr(0).to_string()])
            .connections(2)
            .framing(framing);
        let running = backend::spawn(opts, handler).unwrap();
        let r = wait_served(p.client_addr(), "/hello");
        assert_eq!(
            (r.status, r.body.as_slice()),
            (200, b"hello\n".as_slice()),
            "{r:?}"
        );
        assert_eq!(r.header("x-id"), Some("lib"));
        let mut c = Client::connect(p.client_addr());
        let r = c.get("app.test", "/stream");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.framing, Framing::Chunked, "{framing:?}: {r:?}");
        assert_eq!(r.body, b"part 0;part 1;part 2;part 3;");
        let r = c.get("app.test", "/nope");
        assert_eq!(r.status, 404, "keep-alive continues after a stream: {r:?}");
        running.stop_and_join();
    }
}

#[test]
fn large_request_bodies_by_length_and_chunked() {
    let p = Proxy::start(&one_section("timeout: 5", ""));
    let running = backend::spawn(
        BackendOptions::new(vec![p.backend_addr(0).to_string()]),
        handler,
    )
    .unwrap();
    wait_served(p.client_addr(), "/hello");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut c = Client::connect(p.client_addr());
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = c.request(&req);
    assert_eq!(r.status, 200);
    assert!(
        r.body == body,
        "length-framed echo differs ({} bytes back)",
        r.body.len()
    );

    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for piece in body.chunks(70_001) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = c.request(&req);
    assert_eq!(r.status, 200);
    assert!(
        r.body == body,
        "chunked echo differs ({} bytes back)",
        r.body.len()
    );
    running.stop_and_join();
}

#[test]
fn backends_reconnect_when_the_proxy_restarts() {
    let p = Proxy::start(&one_section("timeout: 5", ""));
    let (client, backend_port) = (p.client_addr(), p.backend_addr(0).port());
    let running = backend::spawn(
        BackendOptions::new(vec![p.backend_addr(0).to_string()]).connections(2),
        handler,
    )
    .unwrap();
    assert_eq!(wait_served(client, "/hello").status, 200);
    drop(p); // the proxy goes away
    let yaml = config(
        &format!("cluster_port: {}\ntimeout: 5", client.port()),
        &[&format!(
            "incoming: app.test\noutgoing: 127.0.0.1:{backend_port}\ndefault: true"
        )],
    );
    let p2 = Proxy::start(&yaml);
    let r = wait_served(p2.client_addr(), "/hello");
    assert_eq!(
        r.status,
        200,
        "backends did not come back: {r:?}\n{}",
        p2.stderr_text()
    );
    running.stop_and_join();
}

#[test]
fn graceful_stop_finishes_the_request_in_flight() {
    let p = Proxy::start(&one_section("timeout: 1", ""));
    let running = backend::spawn(
        BackendOptions::new(vec![p.backend_addr(0).to_string()]),
        handler,
    )
    .unwrap();
    wait_served(p.client_addr(), "/hello");
    let addr = p.client_addr();
    let slow = thread::spawn(move || get_once(addr, "app.test", "/slow"));
    // Stop once the slow request is in the backend's hands.
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    running.stop_and_join();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        t.elapsed()
    );
    let r = join_within(slow, T, "slow request");
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"slow done".as_slice()),
        "{r:?}"
    );
    // Nothing serves any more: the next request waits out `timeout`.
    let r = get_once(p.client_addr(), "app.test", "/hello");
    assert_eq!(r.status, 503, "{r:?}");
}

#[test]
fn a_panicking_handler_gets_500_and_the_backend_keeps_serving() {
    let p = Proxy::start(&one_section("timeout: 5", ""));
    let running = backend::spawn(
        BackendOptions::new(vec![p.backend_addr(0).to_string()]),
        handler,
    )
    .unwrap();
    wait_served(p.client_addr(), "/hello");
    let mut c = Client::connect(p.client_addr());
    let r = c.get("app.test", "/panic");
    assert_eq!(r.status, 500, "{r:?}");
    let r = c.get("app.test", "/hello");
    assert_eq!(r.status, 200, "{r:?}");
    running.stop_and_join();
}

/// A fake proxy that sends garbage: the backend must drop that connection
/// and reconnect (never crash), then serve a real request.
#[test]
fn garbage_from_the_proxy_side_ends_that_connection_and_reconnects() {
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = handled.clone();
    let running = backend::spawn(
        BackendOptions::new(vec![addr.to_string()]).id_prefix("garbage"),
        move |req: &mut Request<'_>, res: &mut Responder<'_>| {
            counter.fetch_add(1, Ordering::Relaxed);
            handler(req, res)
        },
    )
    .unwrap();
    let read_handshake = |s: &mut std::net::TcpStream| {
        let mut hs = [0u8; 25];
        s.read_exact(&mut hs).unwrap();
        assert_eq!(&hs[..11], b"swiftclient");
        assert_eq!(&hs[11..23], b"garbage00000");
        assert_eq!(&hs[23..], b"00");
    };
    let (mut s1, _) = fake.accept().unwrap();
    s1.set_read_timeout(Some(T)).unwrap();
    read_handshake(&mut s1);
    s1.write_all(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
        .unwrap();
    let mut rest = Vec::new();
    let _ = s1.read_to_end(&mut rest); // the backend closes its side
                                       // A 400, as the proxy gives a malformed request, never the handler's.
    assert!(
        rest.starts_with(b"HTTP/1.1 400 Bad Request\r\n")
            && rest.windows(19).any(|w| w == b"Connection: close\r\n"),
        "backend answered garbage with {:?}",
        String::from_utf8_lossy(&rest)
    );
    drop(s1);

    let (mut s2, _) = fake.accept().unwrap();
    s2.set_read_timeout(Some(T)).unwrap();
    read_handshake(&mut s2);
    s2.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = [0u8; 200];
    let mut n = 0;
    while !got[..n].ends_with(b"hello\n") {
        let k = s2.read(&mut got[n..]).unwrap();
        assert!(
            k > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&got[..n])
        );
        n += k;
    }
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(handled.load(Ordering::Relaxed), 1);
    running.stop_and_join();
}

/// `serve_http` on 127.0.0.1:0 in this process, serving `handler` and
/// counting the requests that reach it; stopped when dropped.
struct PlainServer {
    addr: SocketAddr,
    handled: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl PlainServer {
    fn start() -> PlainServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handled = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counter, flag) = (handled.clone(), stop.clone());
        let thread = thread::spawn(move || {
            backend::serve_http(
                listener,
                move |req: &mut Request<'_>, res: &mut Responder<'_>| {
                    counter.fetch_add(1, Ordering::Relaxed);
                    handler(req, res)
                },
                flag,
            )
            .unwrap()
        });
        PlainServer {
            addr,
            handled,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for PlainServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_plain_server_refuses_what_the_proxy_refuses_and_closes() {
    let server = PlainServer::start();
    let many_headers: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "Content-Length with Transfer-Encoding: chunked",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .into(),
            400,
        ),
        (
            "Transfer-Encoding: chunked, then Content-Length",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\
             Content-Length: 5\r\n\r\nhello"
                .into(),
            400,
        ),
        (
            "two different Content-Lengths",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
                .into(),
            400,
        ),
        (
            "a Content-Length that is not a number",
            "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello".into(),
            400,
        ),
        (
            "an obs-fold header line",
            "GET /hello HTTP/1.1\r\nHost: a\r\nX-A: one\r\n  two\r\n\r\n".into(),
            400,
        ),
        (
            "whitespace before a header's colon",
            "GET /hello HTTP/1.1\r\nHost : a\r\n\r\n".into(),
            400,
        ),
        (
            "HTTP/1.1 without Host",
            "GET /hello HTTP/1.1\r\n\r\n".into(),
            400,
        ),
        (
            "two Host headers",
            "GET /hello HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".into(),
            400,
        ),
        (
            "chunked in an HTTP/1.0 request",
            "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(),
            400,
        ),
        (
            "a Transfer-Encoding other than chunked",
            "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".into(),
            501,
        ),
        (
            "CONNECT",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n".into(),
            501,
        ),
        (
            "over 100 headers",
            format!("GET /hello HTTP/1.1\r\nHost: a\r\n{many_headers}\r\n"),
            431,
        ),
        (
            "a request line longer than the 64 KiB head limit",
            format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(70_000)),
            414,
        ),
        (
            "a head longer than the 64 KiB head limit",
            format!(
                "GET /hello HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
                "b".repeat(70_000)
            ),
            431,
        ),
    ];
    let n = cases.len();
    for (what, req, status) in cases {
        refused(server.addr, what, &req, status);
    }
    assert_eq!(
        server.handled.load(Ordering::Relaxed),
        n,
        "only the good requests reached the handler"
    );
}

/// On a kept-alive connection (after a good request), `req` is answered
/// with `status` and `Connection: close`, and the connection closes.
fn refused(addr: SocketAddr, what: &str, req: &str, status: u16) {
    let mut c = Client::connect(addr);
    let r = c.get("a", "/hello");
    assert_eq!(r.status, 200, "{what}: {r:?}");
    let _ = c.try_send(req.as_bytes());
    let r = c.read_response(false);
    assert_eq!(r.status, status, "{what}: {r:?}");
    assert_error_response(&r, status);
    assert!(c.is_closed(T), "{what}: the connection stayed open");
}

/// The one parser refuses a line not ended by CRLF, at the proxy and here
/// alike (docs/request-framing.md).
#[test]
fn the_plain_server_refuses_a_bare_lf_request_head() {
    let server = PlainServer::start();
    for req in [
        "GET /hello HTTP/1.1\nHost: a\n\n",
        "GET /hello HTTP/1.1\r\nHost: a\n\r\n",
        "GET /hello HTTP/1.1\r\nHost: a\r\n\n",
    ] {
        refused(server.addr, &format!("{req:?}"), req, 400);
    }
    assert_eq!(server.handled.load(Ordering::Relaxed), 3);
}

#[test]
fn the_plain_server_serves_keep_alive_pipelined_and_chunked_requests() {
    let server = PlainServer::start();
    let mut c = Client::connect(server.addr);
    let r = c.get("a", "/hello");
    assert_eq!((r.status, r.body.as_slice()), (200, b"hello\n".as_slice()));
    assert!(!r.says_close(), "{r:?}");
    let r = c.request(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    assert_eq!((r.status, r.body.as_slice()), (200, b"hello".as_slice()));
    // The same length twice is one length.
    let r = c.request(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-length: 3\r\n\r\nabc",
    );
    assert_eq!((r.status, r.body.as_slice()), (200, b"abc".as_slice()));
    let r = c.request(
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"hello world".as_slice())
    );
    let r = c.get("a", "/stream");
    assert_eq!(r.framing, Framing::Chunked, "{r:?}");
    assert_eq!(r.body, b"part 0;part 1;part 2;part 3;");
    // Pipelined, with a body the handler never reads in between.
    c.send(
        b"POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nskip\
          GET /nope HTTP/1.1\r\nHost: a\r\n\r\n\
          GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.read_response(false);
    assert_eq!(r.status, 404, "{r:?}");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.says_close(), "{r:?}");
    assert!(c.is_closed(T), "Connection: close was not honoured");

    // HTTP/1.0: closed after the response unless it asks for keep-alive.
    let mut c = Client::connect(server.addr);
    let r = c.request(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.says_keep_alive(), "{r:?}");
    let r = c.request(b"GET /hello HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(c.is_closed(T), "an HTTP/1.0 request without keep-alive");
}
