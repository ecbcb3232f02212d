//! Keep-alive, pipelining and Connection handling (docs/protocol.md#what-the-client-receives, docs/request-framing.md).

mod common;

use common::*;
use std::thread;
use std::time::Duration;

#[test]
fn two_hundred_requests_on_one_connection() {
    let p = Proxy::start(&one_section("", ""));
    let _farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    for i in 0..200 {
        let tok = token("ka");
        let r = if i % 2 == 0 {
            c.get("app.test", &format!("/req/{i}/{tok}"))
        } else {
            let body = format!("body-{tok}");
            c.request(
                format!(
                    "POST /req/{i} HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
        };
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert!(
            r.body_contains(&tok),
            "request {i} got someone else's response: {r:?}"
        );
        assert!(!r.says_close(), "request {i}: {r:?}");
    }
}

#[test]
fn pipelined_requests_answered_in_order() {
    let p = Proxy::start(&one_section("", ""));
    // Several backends, and earlier requests slower than later ones: the
    // answers must still come back in request order.
    let _farm = EchoFarm::start(p.backend_addr(0), "", 3, false);
    let toks: Vec<String> = (0..6).map(|_| token("pipe")).collect();
    let mut batch = Vec::new();
    batch.extend(
        format!(
            "GET /{}/sleep=300 HTTP/1.1\r\nHost: app.test\r\n\r\n",
            toks[0]
        )
        .bytes(),
    );
    batch.extend(
        format!(
            "POST /{}/sleep=150 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\n\r\nhello world",
            toks[1]
        )
        .bytes(),
    );
    batch.extend(
        format!(
            "POST /{} HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            toks[2]
        )
        .bytes(),
    );
    batch.extend(format!("HEAD /{} HTTP/1.1\r\nHost: app.test\r\n\r\n", toks[3]).bytes());
    batch.extend(
        format!(
            "GET /{}/sleep=50 HTTP/1.1\r\nHost: app.test\r\n\r\n",
            toks[4]
        )
        .bytes(),
    );
    batch.extend(format!("GET /{} HTTP/1.1\r\nHost: app.test\r\n\r\n", toks[5]).bytes());
    let mut c = Client::connect(p.client_addr());
    c.send(&batch);
    for (i, tok) in toks.iter().enumerate() {
        let is_head = i == 3;
        let r = c.read_response(is_head);
        assert_eq!(r.status, 200, "pipelined response {i}: {r:?}");
        if is_head {
            assert!(r.body.is_empty());
        } else {
            assert!(
                r.body_contains(tok),
                "pipelined response {i} out of order: {r:?}"
            );
        }
    }
    // And the connection is still usable.
    let r = c.get("app.test", "/after-pipeline");
    assert_eq!(r.status, 200);
    assert!(r.body_contains("/after-pipeline"));
}

#[test]
fn http10_keepalive_is_honoured() {
    let p = Proxy::start(&one_section("", ""));
    let _farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    for i in 0..3 {
        let path = format!("/ten/{i}");
        c.send(
            format!("GET {path} HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n")
                .as_bytes(),
        );
        let r = c.read_response(false);
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body_contains(&path), "{r:?}");
        assert!(
            r.says_keep_alive(),
            "HTTP/1.0 keep-alive response must say `Connection: keep-alive`: {r:?}"
        );
        assert!(!r.says_close(), "{r:?}");
    }
}

#[test]
fn http10_without_keepalive_is_closed() {
    let p = Proxy::start(&one_section("", ""));
    let _farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /ten HTTP/1.0\r\nHost: app.test\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_contains("/ten"));
    assert!(!r.says_keep_alive(), "{r:?}");
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "HTTP/1.0 connection without keep-alive left open"
    );
    // The backend connection stays pooled.
    let r = get_once(p.client_addr(), "app.test", "/again");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn client_connection_close_closes_after_response_backend_stays() {
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("cclose", 1), "");
    // One backend connection serves both clients: Connection: close from the
    // client concerns the client side only.
    let h = thread::spawn(move || {
        let r1 = b.echo_one();
        let r2 = b.echo_one();
        (r1, r2)
    });
    let mut c = Client::connect(p.client_addr());
    let req = b"GET /first HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    c.send(req);
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.says_close(), "{r:?}");
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "proxy kept a `Connection: close` client open"
    );

    let r = get_once(p.client_addr(), "app.test", "/second");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_contains("/second"));
    let (r1, r2) = join_within(h, Duration::from_secs(20), "backend");
    assert_eq!(
        r1.head,
        req.to_vec(),
        "Connection: close must reach the backend unchanged"
    );
    assert_eq!(r2.target, "/second");
}

#[test]
fn backend_connection_close_closes_client_backend_stays_pooled() {
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("bclose", 1), "");
    let h = thread::spawn(move || {
        let r = b.expect_request();
        assert_eq!(r.target, "/first");
        b.respond("200 OK", &[("Connection", "close")], b"bye");
        // The backend keeps its connection to the proxy open and serves on.
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    let r = c.get("app.test", "/first");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"bye");
    assert!(r.says_close(), "{r:?}");
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "backend's Connection: close did not close the client"
    );

    let r = get_once(p.client_addr(), "app.test", "/second");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_contains("/second"));
    join_within(h, Duration::from_secs(20), "backend");
}

#[test]
fn idle_keepalive_connection_closed_after_keepalive_timeout() {
    let p = Proxy::start(&one_section("keepalive_timeout: 1", ""));
    let _farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    let r = c.get("app.test", "/x");
    assert_eq!(r.status, 200);
    assert!(
        c.is_closed(Duration::from_secs(5)),
        "idle keep-alive connection still open 5 s after keepalive_timeout: 1"
    );
}

#[test]
fn a_client_that_half_closes_after_its_request_still_gets_the_response() {
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("half-", 1), "");
    let h = std::thread::spawn(move || {
        b.echo_one(); // warm-up: proves the backend joined the pool
        b.echo_one();
        b.echo_one(); // still pooled afterwards
    });
    // While a request waits in the queue, a half-close is taken as the
    // client leaving; once a backend holds it, the response still comes.
    let r = get_once(p.client_addr(), "app.test", "/warmup");
    assert_eq!(r.status, 200, "{r:?}");
    let mut s = std::net::TcpStream::connect(p.client_addr()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /half HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("GET /half HTTP/1.1"), "{text}");

    let r = get_once(p.client_addr(), "app.test", "/after");
    assert_eq!(r.status, 200, "{r:?}");
    join_within(h, std::time::Duration::from_secs(20), "backend");
}
