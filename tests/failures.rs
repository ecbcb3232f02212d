//! Backend failures (docs/protocol.md#backend-failures): redeploy, 502, cut responses, 504.

mod common;

use common::*;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A backend that reads one request, reports it, then closes unanswered.
fn dying_backend(p: &Proxy, n: usize) -> (thread::JoinHandle<()>, mpsc::Receiver<Request>) {
    let b = Backend::connect(p.backend_addr(0), &id12("die", n), "");
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let r = b.die_after_request();
        let _ = tx.send(r);
    });
    (h, rx)
}

#[test]
fn redeploy_to_next_backend_after_backend_dies() {
    let p = Proxy::start(&one_section("", "redeployable: true"));
    let (h, rx) = dying_backend(&p, 1);
    let addr = p.client_addr();
    let req = b"POST /redeploy HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\n\r\nhello world"
        .to_vec();
    let req2 = req.clone();
    let client = thread::spawn(move || {
        let mut c = Client::connect(addr);
        let r = c.request(&req2);
        (r, c)
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the first backend never got the request");
    join_within(h, Duration::from_secs(5), "dying backend");
    assert_eq!(first.raw, req);

    // The request goes back to the front of the queue and waits for the
    // next backend.
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let (r, mut c) = join_within(client, Duration::from_secs(20), "client");
    assert_eq!(r.status, 200, "request not redeployed: {r:?}");
    assert_eq!(r.header("x-backend"), Some(farm.ids[0].as_str()));
    assert_eq!(r.body, req, "redeployed request not identical");
    // The client connection is fine afterwards.
    let r = c.get("app.test", "/after");
    assert_eq!(r.status, 200, "{r:?}");
    farm.settle(Duration::from_millis(100));
    assert_eq!(farm.complete_requests().len(), 2);
}

#[test]
fn redeploy_with_second_backend_already_idle() {
    let p = Proxy::start(&one_section("", "redeployable: true"));
    let (h, rx) = dying_backend(&p, 2);
    // Make sure the dying backend gets the request first: it is the only one.
    let addr = p.client_addr();
    let client = thread::spawn(move || get_once(addr, "app.test", "/r2"));
    let _first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the first backend never got the request");
    join_within(h, Duration::from_secs(5), "dying backend");
    let farm = EchoFarm::start(p.backend_addr(0), "", 2, false);
    let r = join_within(client, Duration::from_secs(20), "client");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        farm.ids
            .iter()
            .any(|id| r.header("x-backend") == Some(id.as_str())),
        "{r:?}"
    );
}

#[test]
fn backend_dies_without_redeploy_gives_502() {
    let p = Proxy::start(&one_section("", ""));
    let (h, rx) = dying_backend(&p, 3);
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /dies HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let r = c.read_response(false);
    assert_error_response(&r, 502);
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "connection not closed after 502"
    );
    rx.recv_timeout(Duration::from_secs(1))
        .expect("the backend never got the request");
    join_within(h, Duration::from_secs(5), "dying backend");
}

#[test]
fn over_limit_request_is_not_redeployed() {
    let p = Proxy::start(&one_section(
        "",
        "redeployable: true\nredeployment_sizelimit: 100",
    ));
    let (h, rx) = dying_backend(&p, 4);
    let body = "x".repeat(500);
    let addr = p.client_addr();
    let req = format!(
        "POST /big HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let client = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.send(req.as_bytes());
        let r = c.read_response(false);
        let closed = c.is_closed(Duration::from_secs(3));
        (r, closed)
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the backend never got the request");
    assert_eq!(first.body.len(), 500);
    join_within(h, Duration::from_secs(5), "dying backend");
    // A healthy backend is there, but the request is too big to have been kept.
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let (r, closed) = join_within(client, Duration::from_secs(20), "client");
    assert_error_response(&r, 502);
    assert!(closed, "connection not closed after 502");
    // The healthy backend serves the next client, and never saw /big.
    let r = get_once(p.client_addr(), "app.test", "/small");
    assert_eq!(r.status, 200, "{r:?}");
    farm.settle(Duration::from_millis(200));
    assert!(
        farm.seen_containing("/big").is_empty(),
        "over-limit request was redeployed"
    );
}

#[test]
fn small_request_within_limit_is_redeployed_exactly() {
    let p = Proxy::start(&one_section(
        "",
        "redeployable: true\nredeployment_sizelimit: 200",
    ));
    let (h, rx) = dying_backend(&p, 5);
    let addr = p.client_addr();
    let req = b"POST /small HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n".to_vec();
    assert!(req.len() <= 200);
    let r2 = req.clone();
    let client = thread::spawn(move || {
        let mut c = Client::connect(addr);
        c.request(&r2)
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the backend never got the request");
    join_within(h, Duration::from_secs(5), "dying backend");
    let farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let r = join_within(client, Duration::from_secs(20), "client");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some(farm.ids[0].as_str()));
    assert!(r.body_contains("POST /small HTTP/1.1\r\n"), "{r:?}");
}

#[test]
fn backend_dies_after_content_length_response_started() {
    let p = Proxy::start(&one_section("", "redeployable: true"));
    let mut b = Backend::connect(p.backend_addr(0), &id12("cut", 1), "");
    let h = thread::spawn(move || {
        b.expect_request();
        b.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        b.write(&[b'a'; 100]);
        thread::sleep(Duration::from_millis(100));
        drop(b);
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /cut HTTP/1.1\r\nHost: app.test\r\n\r\n");
    match c.try_read_response(false) {
        Ok(r) => panic!("a cut response arrived complete: {r:?}"),
        Err(e) => {
            let partial = e
                .partial
                .unwrap_or_else(|| panic!("no response head reached the client: {}", e.error));
            assert_eq!(partial.status, 200, "{partial:?}");
            assert!(partial.body.len() < 1000);
        }
    }
    assert!(c.is_closed(Duration::from_secs(3)));
    join_within(h, Duration::from_secs(5), "backend");
}

#[test]
fn backend_dies_mid_chunked_response_leaves_it_unterminated() {
    let p = Proxy::start(&one_section("", "redeployable: true"));
    let mut b = Backend::connect(p.backend_addr(0), &id12("cutchk", 1), "");
    let h = thread::spawn(move || {
        b.expect_request();
        b.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
        thread::sleep(Duration::from_millis(100));
        b.write(b"6\r\n wor");
        thread::sleep(Duration::from_millis(100));
        drop(b);
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /cutchunked HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let err = match c.try_read_response(false) {
        Ok(r) => panic!("a cut chunked response was terminated as if complete: {r:?}"),
        Err(e) => e,
    };
    let partial = err
        .partial
        .unwrap_or_else(|| panic!("no response head reached the client: {}", err.error));
    assert_eq!(partial.status, 200);
    assert_eq!(partial.framing, Framing::Chunked);
    assert!(partial.body.starts_with(b"hello"), "{partial:?}");
    assert!(
        err.error.kind() != std::io::ErrorKind::TimedOut,
        "client connection not closed after the backend died mid-response"
    );
    join_within(h, Duration::from_secs(5), "backend");
}

#[test]
fn backend_dies_mid_packet_response_leaves_chunked_unterminated() {
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("cutpkt", 1), "");
    let h = thread::spawn(move || {
        b.expect_request();
        b.write(b"HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\n\r\n00000005hello0000");
        thread::sleep(Duration::from_millis(100));
        drop(b);
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /cutpkt HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let err = match c.try_read_response(false) {
        Ok(r) => panic!("a cut packet-mode response was terminated as if complete: {r:?}"),
        Err(e) => e,
    };
    let partial = err
        .partial
        .unwrap_or_else(|| panic!("no response head reached the client: {}", err.error));
    assert_eq!(partial.status, 200);
    assert!(
        err.error.kind() != std::io::ErrorKind::TimedOut,
        "client connection not closed: {}",
        err.error
    );
    join_within(h, Duration::from_secs(5), "backend");
}

#[test]
fn packet_mode_protocol_error_before_payload_cuts_client() {
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("badpkt", 1), "");
    let h = thread::spawn(move || {
        b.expect_request();
        b.write(b"HTTP/1.1 200 OK\r\nX-Swiftiply-Close: 1\r\n\r\n00000003abcXYZ12345");
        // The proxy must give up on this backend connection.
        b.is_closed(Duration::from_secs(5))
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /badpkt HTTP/1.1\r\nHost: app.test\r\n\r\n");
    match c.try_read_response(false) {
        // Head already relayed: the client connection is cut, unterminated.
        Err(e) => assert!(
            e.error.kind() != std::io::ErrorKind::TimedOut,
            "client not closed: {e:?}"
        ),
        // Or the proxy answered with an error before relaying anything.
        Ok(r) => assert_error_response(&r, 502),
    }
    let closed = join_within(h, Duration::from_secs(10), "backend");
    assert!(
        closed,
        "backend connection that sent a bad packet length was kept"
    );
}

#[test]
fn silent_backend_gives_504_after_backend_timeout() {
    let p = Proxy::start(&one_section("backend_timeout: 1", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("silent", 1), "");
    let h = thread::spawn(move || {
        b.expect_request();
        // Say nothing; wait (bounded) for the proxy to give up.
        b.is_closed(Duration::from_secs(5))
    });
    let mut c = Client::connect(p.client_addr());
    let t = Instant::now();
    c.send(b"GET /silent HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let r = c.read_response(false);
    let took = t.elapsed();
    assert_error_response(&r, 504);
    assert!(
        took >= Duration::from_millis(800),
        "504 before backend_timeout ({took:?})"
    );
    assert!(took < Duration::from_secs(5), "504 late ({took:?})");
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "connection not closed after 504"
    );
    join_within(h, Duration::from_secs(10), "backend");
}

#[test]
fn backend_stalling_mid_response_is_cut_after_backend_timeout() {
    let p = Proxy::start(&one_section("backend_timeout: 1", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("stall", 1), "");
    let h = thread::spawn(move || {
        b.expect_request();
        b.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part");
        b.is_closed(Duration::from_secs(6))
    });
    let mut c = Client::connect(p.client_addr());
    let t = Instant::now();
    c.send(b"GET /stall HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let err = match c.try_read_response(false) {
        Ok(r) => panic!("stalled response completed? {r:?}"),
        Err(e) => e,
    };
    let took = t.elapsed();
    assert!(
        err.error.kind() != std::io::ErrorKind::TimedOut,
        "client not closed within the test deadline: {err:?}"
    );
    let partial = err
        .partial
        .expect("response head should have reached the client");
    assert_eq!(partial.status, 200);
    assert_eq!(partial.body, b"only part");
    assert!(
        took >= Duration::from_millis(800),
        "cut before backend_timeout ({took:?})"
    );
    assert!(took < Duration::from_secs(6), "cut late ({took:?})");
    join_within(h, Duration::from_secs(10), "backend");
}

#[test]
fn slow_backend_within_backend_timeout_is_fine() {
    let p = Proxy::start(&one_section("backend_timeout: 2", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("slow", 1), "");
    let h = thread::spawn(move || {
        let r = b.expect_request();
        b.respond_slow(&r, Duration::from_millis(700));
    });
    let r = get_once(p.client_addr(), "app.test", "/slow");
    assert_eq!(r.status, 200, "{r:?}");
    join_within(h, Duration::from_secs(10), "backend");
}

#[test]
fn redeployed_request_goes_to_the_front_of_the_queue() {
    let p = Proxy::start(&one_section("timeout: 10", "redeployable: true"));
    let b = Backend::connect(p.backend_addr(0), &id12("die", 6), "");
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let h = thread::spawn(move || {
        let mut b = b;
        let r = b.expect_request();
        let _ = tx.send(r.target.clone());
        // Die only once the second request is waiting in the queue.
        let _ = go_rx.recv_timeout(Duration::from_secs(10));
        drop(b);
    });
    let addr = p.client_addr();
    let c1 = thread::spawn(move || get_once(addr, "app.test", "/first"));
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10))
            .expect("first request never dispatched"),
        "/first"
    );
    let c2 = thread::spawn(move || get_once(addr, "app.test", "/second"));
    thread::sleep(Duration::from_millis(300));
    go_tx.send(()).unwrap();
    join_within(h, Duration::from_secs(5), "dying backend");
    thread::sleep(Duration::from_millis(200));

    // One backend: it must get /first (redeployed, front) before /second.
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let r1 = join_within(c1, Duration::from_secs(20), "client 1");
    let r2 = join_within(c2, Duration::from_secs(20), "client 2");
    assert_eq!(r1.status, 200, "{r1:?}");
    assert_eq!(r2.status, 200, "{r2:?}");
    farm.settle(Duration::from_millis(100));
    let order: Vec<_> = farm
        .complete_requests()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(
        order,
        vec!["/first".to_string(), "/second".to_string()],
        "redeployed request not at the front"
    );
}

#[test]
fn a_request_that_makes_every_backend_fail_gets_a_502_after_three_redeploys() {
    let p = Proxy::start(&one_section("", "redeployable: true"));
    let addr = p.backend_addr(0);
    // Five backends that close as soon as a request arrives.
    let mut backends: Vec<Backend> = (0..5)
        .map(|i| Backend::connect(addr, &id12("poison", i), ""))
        .collect();
    assert!(p.wait_for_log_count(" joined section ", 5, Duration::from_secs(10)));
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /poison HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let mut took = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut done = vec![false; backends.len()];
    // Each backend that receives it hangs up; at most 4 ever see it.
    while Instant::now() < deadline && took < 5 {
        for (i, b) in backends.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            b.set_read_timeout(Duration::from_millis(20));
            if let Ok(Some(_)) = b.read_request_head() {
                done[i] = true;
                took += 1;
                let _ = b.conn.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        if took == 4 {
            break;
        }
    }
    assert_eq!(took, 4, "the request reached {took} backends");
    let r = c.read_response(false);
    assert_eq!(r.status, 502, "{r:?}");
    // The fifth backend never saw it and still serves.
    let spare = done.iter().position(|d| !d).expect("one backend left");
    let mut c2 = Client::connect(p.client_addr());
    c2.send(b"GET /fine HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let b = &mut backends[spare];
    b.set_read_timeout(Duration::from_secs(5));
    let req = b.expect_request();
    b.respond_echo(&req);
    assert_eq!(c2.read_response(false).status, 200);
}

#[test]
fn a_hundred_headers_with_x_forwarded_for_to_add_are_refused_not_forwarded_as_101() {
    let p = Proxy::start(&one_section("", "xforwardedfor: true"));
    let mut b = Backend::connect(p.backend_addr(0), &id12("xff", 1), "");
    assert!(p.wait_for_log(" joined section ", Duration::from_secs(10)));
    let mut head = String::from("GET /many HTTP/1.1\r\nHost: app.test\r\n");
    for i in 1..100 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let r = get_raw(p.client_addr(), head.as_bytes());
    assert_eq!(r.status, 431, "{r:?}");
    // 99 headers: X-Forwarded-For makes 100, forwarded.
    let mut head = String::from("GET /fewer HTTP/1.1\r\nHost: app.test\r\n");
    for i in 1..99 {
        head.push_str(&format!("X-H{i}: v\r\n"));
    }
    head.push_str("\r\n");
    let mut c = Client::connect(p.client_addr());
    c.send(head.as_bytes());
    let req = b.expect_request();
    assert!(req.header("x-forwarded-for").is_some(), "{req:?}");
    b.respond_echo(&req);
    assert_eq!(c.read_response(false).status, 200);
}

fn get_raw(addr: std::net::SocketAddr, request: &[u8]) -> Response {
    let mut c = Client::connect(addr);
    c.send(request);
    c.read_response(false)
}
