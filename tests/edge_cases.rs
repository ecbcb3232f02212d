//! Edge cases of the exchange between a client and a backend: empty bodies,
//! requests larger than the buffer, backends that close or answer early.
//! Each once broke the proxy; the doc comments say what went wrong.

mod common;

use common::*;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Once broken: a `Content-Length: 0` response never completes. The head is relayed,
/// but `relay_response` only marks a Length body done after scanning at least
/// one byte, so the exchange sits in `Proxying` until `backend_timeout`; the
/// next request on the connection never reaches a backend and the client is
/// cut.
#[test]
fn empty_content_length_response_completes_and_the_connection_goes_on() {
    let p = Proxy::start(&one_section("backend_timeout: 3", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("zero", 1), "");
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let q = b.expect_request();
    assert_eq!(q.target, "/first");
    b.respond("200 OK", &[], b"");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty());

    c.send(b"GET /second HTTP/1.1\r\nHost: app.test\r\n\r\n");
    b.set_read_timeout(Duration::from_secs(2));
    match b.read_request() {
        Ok(Some(q)) => {
            assert_eq!(q.target, "/second");
            b.respond_echo(&q);
        }
        other => panic!(
            "the request after an empty Content-Length response never reached the backend: {other:?}"
        ),
    }
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
}

/// Once broken: a chunked request body larger than the I/O buffer, sent to a
/// redeployable section with the default `redeployment_sizelimit` (equal to
/// the buffer size), deadlocks: the request stays "retained" because
/// `fwd - req_start` can never exceed the buffer size, so `inbuf` never
/// releases anything and the client read returns `Full` forever. The client
/// gets 504 after `backend_timeout` instead of its response.
#[test]
fn chunked_upload_larger_than_the_buffer_to_a_redeployable_section() {
    let p = Proxy::start(&one_section("backend_timeout: 3", "redeployable: true"));
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let chunk = vec![b'x'; 4000];
    for _ in 0..10 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let addr = p.client_addr();
    let t0 = Instant::now();
    let client = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(&req);
        c.read_response(false)
    });
    let r = join_within(client, Duration::from_secs(15), "client");
    assert_eq!(
        r.status,
        200,
        "chunked upload over the buffer size stalled ({:?}): {r:?}",
        t0.elapsed()
    );
    farm.settle(Duration::from_millis(100));
    assert_eq!(farm.complete_requests().len(), 1);
}

/// Once broken: a backend that closes right after completing a response is handed
/// the oldest waiting request at once (`backend_ready` pairs before looking
/// at the socket), although its EOF is already readable. The waiting request
/// is written into a dead socket and, in a non-redeployable section, the
/// client gets 502 while a live backend is about to connect. docs/protocol.md#backend-lifecycle:
/// never dispatch into a dead socket.
#[test]
fn backend_that_closed_after_its_response_is_not_given_the_waiting_request() {
    const BODY: usize = 16 << 20;
    let p = Proxy::start(&one_section("timeout: 8", ""));
    let addr = p.client_addr();
    let mut b = Backend::connect(p.backend_addr(0), &id12("quit", 1), "");

    // Client A: its response is big, and it reads slowly, so the proxy is
    // still behind on the backend socket when the backend closes.
    let (a_tx, a_rx) = mpsc::channel();
    let client_a = thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /a HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .unwrap();
        a_rx.recv_timeout(Duration::from_secs(10)).unwrap(); // B is queued
        let mut got = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        let mut body = 0usize;
        let mut head_len = None;
        while body < BODY {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => match head_len {
                    None => {
                        got.extend_from_slice(&buf[..n]);
                        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            head_len = Some(i + 4);
                            body = got.len() - (i + 4);
                        }
                    }
                    Some(_) => body += n,
                },
            }
            thread::sleep(Duration::from_millis(1));
        }
        body
    });
    let q = b.expect_request();
    assert_eq!(q.target, "/a");

    // Client B queues behind A (the only backend is busy).
    let client_b = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(b"GET /b HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n");
        c.read_response(false)
    });
    thread::sleep(Duration::from_millis(200));
    a_tx.send(()).unwrap();

    let body = vec![b'z'; BODY];
    let writer = thread::spawn(move || {
        b.respond("200 OK", &[], &body);
        drop(b); // the backend leaves right after its response
    });
    join_within(writer, Duration::from_secs(15), "backend writer");
    let got_a = join_within(client_a, Duration::from_secs(20), "client A");
    assert_eq!(got_a, BODY, "client A's response");
    // A live backend arrives once the first one has gone.
    let farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let r = join_within(client_b, Duration::from_secs(20), "client B");
    assert_eq!(
        r.status, 200,
        "the waiting request went to the backend that had closed: {r:?}"
    );
    assert_eq!(r.header("x-backend"), Some(farm.ids[0].as_str()));
}

/// (tx_queue, rx_queue) of the loopback TCP socket `local_port` →
/// `remote_port`, from /proc/net/tcp.
fn tcp_queues(local_port: u16, remote_port: u16) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/net/tcp").ok()?;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 {
            continue;
        }
        let port = |a: &str| u16::from_str_radix(a.rsplit(':').next()?, 16).ok();
        if port(f[1]) == Some(local_port) && port(f[2]) == Some(remote_port) {
            let (tx, rx) = f[4].split_once(':')?;
            return Some((
                u64::from_str_radix(tx, 16).ok()?,
                u64::from_str_radix(rx, 16).ok()?,
            ));
        }
    }
    None
}

/// Once broken: the exchange ends as soon as the response is relayed, even when
/// request bytes are still queued for the backend (`to_backend`), because
/// `finish_exchange` only asks whether the request body was *scanned*
/// (`req_done`), not whether it was *written*. `finish()` then clears
/// `to_backend` and the backend goes back to the pool with a truncated
/// request: it waits for bytes that never come, and the next client's
/// request is read as the rest of this body (stream desync / mixed
/// requests). Happens whenever a backend answers before draining a large
/// body (early 401/413/redirect), then drains it as HTTP/1.1 requires.
#[test]
fn request_bytes_still_queued_for_the_backend_are_not_dropped() {
    // Neither buffered nor spooled: the backend sees the body as it arrives.
    let p = Proxy::start(&one_section(
        "backend_timeout: 20\nrequest_buffer: 0\nrequest_spool_limit: 0",
        "",
    ));
    let mut b = Backend::connect(p.backend_addr(0), &id12("early", 1), "");
    let b_local = b.conn.stream.local_addr().unwrap().port();
    let b_listen = p.backend_addr(0).port();
    let mut c = Client::connect(p.client_addr());
    c.send(b"POST /early HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    let head = b.read_request_head().unwrap().expect("request head");
    let c_local = c.conn.stream.local_addr().unwrap().port();
    let c_listen = p.client_addr().port();
    // Body bytes that left the proxy (in kernel queues towards the backend;
    // unacknowledged ones count twice, which only errs on "not stuck"),
    // and bytes the proxy has not read from the client.
    let path = || {
        let (tx, _) = tcp_queues(b_listen, b_local).expect("proxy-side backend socket");
        let (_, rx) = tcp_queues(b_local, b_listen).expect("backend socket");
        tx + rx
    };
    let unread = || {
        tcp_queues(c_listen, c_local)
            .expect("proxy-side client socket")
            .1
    };
    // Send 8 KiB chunks (the backend does not read) until the proxy can no
    // longer pass them on: the last one then sits in the proxy's buffer.
    let mut sent_body = Vec::new();
    // Loopback buffers grow to megabytes: on a loaded machine filling them
    // 8 KiB at a time takes a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0u8;
    loop {
        assert!(
            Instant::now() < deadline,
            "the proxy→backend path never filled"
        );
        let data = vec![b'a' + (i % 26); 8192];
        i = i.wrapping_add(1);
        let mut piece = format!("{:x}\r\n", data.len()).into_bytes();
        piece.extend_from_slice(&data);
        piece.extend_from_slice(b"\r\n");
        c.send(&piece);
        sent_body.extend_from_slice(&piece);
        let sent = sent_body.len() as u64;
        let until = Instant::now() + Duration::from_millis(150);
        let mut passed_on = false;
        while Instant::now() < until {
            if path() >= sent {
                passed_on = true;
                break;
            }
            thread::sleep(Duration::from_millis(2));
        }
        if !passed_on {
            assert_eq!(unread(), 0, "the proxy stopped reading the client");
            break;
        }
    }
    // The end of the body now fits in the proxy's buffer: it is scanned, so
    // the request counts as complete, but it cannot be written yet.
    c.send(b"0\r\n\r\n");
    sent_body.extend_from_slice(b"0\r\n\r\n");
    thread::sleep(Duration::from_millis(200));
    b.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    thread::sleep(Duration::from_millis(300));

    // Now the backend drains the body, as a well-behaved server does.
    b.set_read_timeout(Duration::from_secs(3));
    match b.read_request_body(head) {
        Ok(req) => assert_eq!(
            req.raw[req.head.len()..],
            sent_body[..],
            "body bytes changed"
        ),
        Err(e) => assert_ne!(
            e.kind(),
            std::io::ErrorKind::TimedOut,
            "the backend never got the end of the request body: the proxy \
             dropped bytes it had queued for it ({e})"
        ),
    }
}

/// BUG (docs/protocol.md#what-the-client-receives: "when the proxy will close the client connection after
/// this response, the response carries `Connection: close`"): a backend that
/// answers before the request body is complete (an early 401/413/redirect)
/// gets its head relayed as is; `finish_exchange` then closes the client
/// because `!req_done`, so the client saw a keep-alive response on a
/// connection that is then shut, and will reuse it for its next request.
#[test]
fn early_response_that_ends_the_connection_says_connection_close() {
    let p = Proxy::start(&one_section("request_spool_limit: 0", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("early", 2), "");
    let mut c = Client::connect(p.client_addr());
    c.send(b"POST /big HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000\r\n\r\n0123456789");
    let _head = b.read_request_head().unwrap().expect("request head");
    b.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 2\r\n\r\nno");
    let r = c.read_response(false);
    assert_eq!(r.status, 413, "{r:?}");
    let closed = c.is_closed(Duration::from_secs(2));
    assert!(
        r.says_close() || !closed,
        "the proxy closed the client after a response without `Connection: close`: {r:?}"
    );
}
