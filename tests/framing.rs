//! Response framings (docs/protocol.md, "Responses" and "What the client receives"): Content-Length, chunked, packet mode,
//! close-delimited, no body (HEAD, 204, 304), 1xx relayed. Each keep-alive
//! case is followed by a second request on the same client connection.

mod common;

use common::*;
use std::thread;
use std::time::Duration;

const PAUSE: Duration = Duration::from_millis(2);

fn proxy() -> Proxy {
    Proxy::start(&one_section("", ""))
}

/// Sends a second request on `c` and checks that the backend echoed it.
fn second_request_ok(c: &mut Client, tag: &str) {
    let path = format!("/second/{tag}");
    let r = c.get("app.test", &path);
    assert_eq!(
        r.status, 200,
        "second request on the same connection: {r:?}"
    );
    assert!(
        r.body_contains(&path),
        "second response is not the echo of the second request: {r:?}"
    );
}

#[test]
fn content_length_response_then_keepalive() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("cl", 1), "");
    let body: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let expect = body.clone();
    let h = thread::spawn(move || {
        let r = b.expect_request();
        assert_eq!(r.target, "/one");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Test: cl\r\n\r\n",
            body.len()
        );
        b.write_split(head.as_bytes(), &[10], PAUSE);
        b.write_split(&body, &[1, 1, 100, 3, 1000], PAUSE);
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    let r = c.get("app.test", "/one");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-test"), Some("cl"));
    assert_eq!(r.header("content-length"), Some("5000"), "{r:?}");
    assert_eq!(r.body, expect);
    assert!(!r.says_close(), "keep-alive response says close: {r:?}");
    second_request_ok(&mut c, "cl");
    join_within(h, Duration::from_secs(20), "backend");
}

#[test]
fn chunked_response_passes_through_then_keepalive() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("chunk", 1), "");
    let big = vec![b'z'; 3000];
    let h = thread::spawn(move || {
        let r = b.expect_request();
        assert_eq!(r.target, "/chunked");
        b.respond_chunked(&[&b"hello "[..], &b"w"[..], &big[..], &b"orld"[..]], PAUSE);
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    let r = c.get("app.test", "/chunked");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.framing, Framing::Chunked, "{r:?}");
    let mut want = b"hello w".to_vec();
    want.extend(vec![b'z'; 3000]);
    want.extend_from_slice(b"orld");
    assert_eq!(r.body, want);
    assert!(!r.says_close(), "{r:?}");
    second_request_ok(&mut c, "chunked");
    join_within(h, Duration::from_secs(20), "backend");
}

fn packets_payloads() -> Vec<Vec<u8>> {
    vec![
        b"first packet".to_vec(),
        Vec::new(),
        b"x".to_vec(),
        vec![b'p'; 1500],
        Vec::new(),
        Vec::new(),
        b"0\r\n\r\n not a terminator".to_vec(),
        b"--------".to_vec(),
        b"last".to_vec(),
    ]
}

#[test]
fn packet_mode_becomes_chunked_for_http11_then_keepalive() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("packet", 1), "");
    let h = thread::spawn(move || {
        let r = b.expect_request();
        assert_eq!(r.target, "/packets");
        let pk = packets_payloads();
        let refs: Vec<&[u8]> = pk.iter().map(|v| v.as_slice()).collect();
        b.respond_packets(&refs, Duration::from_millis(1));
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    let r = c.get("app.test", "/packets");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        !r.has_header("x-swiftiply-close"),
        "X-Swiftiply-Close leaked to the client: {r:?}"
    );
    assert_eq!(
        r.framing,
        Framing::Chunked,
        "packet mode must reach HTTP/1.1 clients chunked: {r:?}"
    );
    assert!(r.header("content-length").is_none(), "{r:?}");
    assert_eq!(r.body, packets_payloads().concat(), "{r:?}");
    assert!(!r.says_close(), "{r:?}");
    second_request_ok(&mut c, "packets");
    join_within(h, Duration::from_secs(30), "backend");
}

#[test]
fn packet_mode_http10_client_gets_close_delimited_body() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("pk10-", 1), "");
    let h = thread::spawn(move || {
        let r = b.expect_request();
        assert_eq!(r.version, "HTTP/1.0");
        let pk = packets_payloads();
        let refs: Vec<&[u8]> = pk.iter().map(|v| v.as_slice()).collect();
        b.respond_packets(&refs, Duration::from_millis(1));
        // The backend connection stays pooled: it serves the next client.
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /packets10 HTTP/1.0\r\nHost: app.test\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.has_header("x-swiftiply-close"), "{r:?}");
    assert!(
        r.header("transfer-encoding").is_none(),
        "HTTP/1.0 client got Transfer-Encoding: {r:?}"
    );
    assert_eq!(r.framing, Framing::UntilClose, "{r:?}");
    assert_eq!(r.body, packets_payloads().concat());
    assert!(c.is_closed(Duration::from_secs(3)));

    let r = get_once(p.client_addr(), "app.test", "/after");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_contains("/after"));
    join_within(h, Duration::from_secs(30), "backend");
}

#[test]
fn packet_mode_http10_keepalive_client_still_gets_close() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("pk10k", 1), "");
    let h = thread::spawn(move || {
        b.expect_request();
        b.respond_packets(
            &[&b"abc"[..], &b""[..], &b"def"[..]],
            Duration::from_millis(1),
        );
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /p HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!r.has_header("x-swiftiply-close"), "{r:?}");
    assert!(r.header("transfer-encoding").is_none(), "{r:?}");
    assert!(
        !r.says_keep_alive(),
        "a close-delimited body cannot be keep-alive: {r:?}"
    );
    assert_eq!(r.body, b"abcdef");
    assert!(c.is_closed(Duration::from_secs(3)));
    join_within(h, Duration::from_secs(20), "backend");
}

#[test]
fn close_delimited_response_closes_client() {
    let p = proxy();
    let b1 = Backend::connect(p.backend_addr(0), &id12("close", 1), "");
    let h = thread::spawn(move || {
        let mut b1 = b1;
        let r = b1.expect_request();
        assert_eq!(r.target, "/until-close");
        b1.respond_close_delimited(b"body that ends when the backend closes", PAUSE);
    });
    let mut c = Client::connect(p.client_addr());
    let r = c.get("app.test", "/until-close");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"body that ends when the backend closes");
    assert!(
        r.says_close(),
        "the proxy closes after a close-delimited body, so it must say so: {r:?}"
    );
    assert!(c.is_closed(Duration::from_secs(3)));
    join_within(h, Duration::from_secs(20), "backend");

    // The closed backend is gone; a new backend serves the next client.
    let mut b2 = Backend::connect(p.backend_addr(0), &id12("close", 2), "");
    let h2 = thread::spawn(move || {
        b2.echo_one();
    });
    let r = get_once(p.client_addr(), "app.test", "/next");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_contains("/next"));
    join_within(h2, Duration::from_secs(20), "backend 2");
}

#[test]
fn head_response_has_no_body_then_keepalive() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("head", 1), "");
    let h = thread::spawn(move || {
        let r = b.expect_request();
        assert_eq!(r.method, "HEAD");
        // Content-Length describes the GET body; none follows for HEAD.
        b.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Test: head\r\n\r\n");
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"HEAD /h HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let r = c.read_response(true);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("1000"));
    assert!(r.body.is_empty());
    second_request_ok(&mut c, "head");
    join_within(h, Duration::from_secs(20), "backend");
}

#[test]
fn no_content_204_then_keepalive() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("n204-", 1), "");
    let h = thread::spawn(move || {
        b.expect_request();
        b.write(b"HTTP/1.1 204 No Content\r\nX-Test: 204\r\n\r\n");
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    let r = c.get("app.test", "/204");
    assert_eq!(r.status, 204, "{r:?}");
    assert!(r.body.is_empty());
    second_request_ok(&mut c, "204");
    join_within(h, Duration::from_secs(20), "backend");
}

#[test]
fn not_modified_304_with_content_length_then_keepalive() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("n304-", 1), "");
    let h = thread::spawn(move || {
        let r = b.expect_request();
        assert_eq!(r.header("if-none-match"), Some("\"v1\""));
        b.write(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 1234\r\n\r\n");
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /cached HTTP/1.1\r\nHost: app.test\r\nIf-None-Match: \"v1\"\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 304, "{r:?}");
    assert!(r.body.is_empty());
    second_request_ok(&mut c, "304");
    join_within(h, Duration::from_secs(20), "backend");
}

#[test]
fn interim_100_continue_relayed_then_keepalive() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("c100-", 1), "");
    let h = thread::spawn(move || {
        let r = b.expect_request();
        assert_eq!(r.body, b"hello");
        b.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        thread::sleep(PAUSE);
        b.respond("200 OK", &[], b"got hello");
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
    let (interim, r) = c.read_final_response(false);
    assert_eq!(
        interim.len(),
        1,
        "the 100 Continue was not relayed: {interim:?} then {r:?}"
    );
    assert_eq!(interim[0].status, 100);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"got hello");
    second_request_ok(&mut c, "100");
    join_within(h, Duration::from_secs(20), "backend");
}

/// A small body is read by the proxy before a backend is taken, so the
/// proxy answers `Expect: 100-continue` itself; the backend gets the whole
/// request, and a `100 Continue` it sends too is not passed on twice.
#[test]
fn expect_100_continue_is_answered_by_the_proxy_for_a_buffered_body() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("e100b", 1), "");
    let h = thread::spawn(move || {
        let r = b.read_request().expect("read request").expect("a request");
        assert_eq!(r.body, b"0123456789");
        b.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        b.respond("201 Created", &[], b"stored");
        b.echo_one();
    });
    put_expecting_100(&p, "e100b");
    join_within(h, Duration::from_secs(20), "backend");
}

/// A streamed body (neither buffered nor spooled): the head goes ahead and
/// the backend's own `100 Continue` is relayed.
#[test]
fn expect_100_continue_head_forwarded_before_a_streamed_body() {
    let p = Proxy::start(&one_section(
        "request_buffer: 0\nrequest_spool_limit: 0",
        "",
    ));
    let mut b = Backend::connect(p.backend_addr(0), &id12("e100-", 1), "");
    let h = thread::spawn(move || {
        let head = b
            .read_request_head()
            .expect("read head")
            .expect("proxy closed instead of forwarding");
        b.write(b"HTTP/1.1 100 Continue\r\n\r\n");
        let r = b.read_request_body(head).expect("read body");
        assert_eq!(r.body, b"0123456789");
        b.respond("201 Created", &[], b"stored");
        b.echo_one();
    });
    put_expecting_100(&p, "e100");
    join_within(h, Duration::from_secs(20), "backend");
}

/// The client side of both: the head alone, a `100 Continue` within 5 s,
/// then the body, `201 stored`, and a second request on the connection.
fn put_expecting_100(p: &Proxy, tag: &str) {
    let mut c = Client::connect(p.client_addr());
    c.send(b"PUT /thing HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n");
    let _ = c.conn.stream.set_read_timeout(Some(Duration::from_secs(5)));
    let interim = match c.try_read_response(false) {
        Ok(r) => r,
        Err(e) => panic!("no 100 Continue within 5 s ({e:?})"),
    };
    let _ = c.conn.stream.set_read_timeout(Some(IO_TIMEOUT));
    assert_eq!(interim.status, 100, "{interim:?}");
    c.send(b"0123456789");
    let r = c.read_response(false);
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body, b"stored");
    second_request_ok(&mut c, tag);
}

#[test]
fn chunked_request_body_forwarded_chunked() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("rqchk", 1), "");
    let h = thread::spawn(move || {
        let r = b.echo_one();
        assert_eq!(r.body, b"hello world");
        r
    });
    let mut c = Client::connect(p.client_addr());
    let req = b"POST /c HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
    c.conn
        .write_split(req, AWKWARD, Duration::from_millis(1))
        .unwrap();
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = join_within(h, Duration::from_secs(20), "backend");
    let head_len = seen.head.len();
    assert_eq!(
        &seen.raw[..head_len],
        &req[..head_len],
        "head not forwarded byte for byte"
    );
    assert!(
        String::from_utf8_lossy(&seen.raw)
            .to_lowercase()
            .contains("transfer-encoding: chunked"),
        "body framing changed"
    );
}

#[test]
fn chunked_response_is_decoded_for_an_http10_client() {
    let p = proxy();
    let mut b = Backend::connect(p.backend_addr(0), &id12("ch10-", 1), "");
    let h = thread::spawn(move || {
        let r = b.expect_request();
        assert_eq!(r.version, "HTTP/1.0");
        b.respond_chunked(
            &[b"hello ", b"chunked ", b"world"],
            Duration::from_millis(1),
        );
        // The backend connection stays pooled: it serves the next client.
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /chunked10 HTTP/1.0\r\nHost: app.test\r\nConnection: keep-alive\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.header("transfer-encoding").is_none(),
        "HTTP/1.0 client got Transfer-Encoding: {r:?}"
    );
    assert!(r.says_close(), "{r:?}");
    assert_eq!(r.framing, Framing::UntilClose, "{r:?}");
    assert_eq!(r.body, b"hello chunked world");
    assert!(c.is_closed(Duration::from_secs(3)));

    let r = get_once(p.client_addr(), "app.test", "/after");
    assert_eq!(r.status, 200, "{r:?}");
    join_within(h, Duration::from_secs(30), "backend");
}
