//! Strict request parsing (docs/request-framing.md): each hostile or malformed request is
//! answered by the proxy with the given status, `Connection: close`, a closed
//! connection, and never reaches a backend. Each case is followed by a
//! healthy request that must succeed. Bad requests carry `BADTOK` and most
//! are followed, in the same write, by a pipelined request that also carries
//! `BADTOK` and must not be forwarded either.

mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

const SMUGGLED: &str = "GET /BADTOK-smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";

fn setup(top: &str) -> (Proxy, EchoFarm) {
    let p = Proxy::start(&one_section(top, ""));
    let farm = EchoFarm::start(p.backend_addr(0), "", 2, true);
    (p, farm)
}

fn healthy_request_works(p: &Proxy, farm: &mut EchoFarm) {
    let path = format!("/{}", token("healthy"));
    let r = get_once(p.client_addr(), "app.test", &path);
    assert_eq!(r.status, 200, "healthy request after a refused one: {r:?}");
    assert!(r.body_contains(&path), "{r:?}");
    assert!(farm.wait_for(Duration::from_secs(2), |s| s.complete && s.target == path));
}

fn nothing_bad_reached_backends(farm: &mut EchoFarm) {
    farm.settle(Duration::from_millis(150));
    let bad = farm.seen_containing("BADTOK");
    assert!(
        bad.is_empty(),
        "a refused request reached a backend: {bad:?}"
    );
}

/// Sends `bad` (with a pipelined smuggled request appended when `smuggle`),
/// expects `status` as a proper error response and a closed connection.
fn check_refused_with(top: &str, bad: &[u8], smuggle: bool, status: u16) {
    let (p, mut farm) = setup(top);
    let mut c = Client::connect(p.client_addr());
    let mut bytes = bad.to_vec();
    if smuggle {
        bytes.extend_from_slice(SMUGGLED.as_bytes());
    }
    c.send(&bytes);
    let r = c.read_response(bad.starts_with(b"HEAD "));
    assert_error_response(&r, status);
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "connection left open after {status}"
    );
    healthy_request_works(&p, &mut farm);
    nothing_bad_reached_backends(&mut farm);
}

fn check_refused(bad: &[u8], status: u16) {
    check_refused_with("", bad, true, status)
}

/// For errors found while the body streams: the client gets `status` (if
/// no response had started) or a closed connection, and no backend receives
/// the complete bad request.
fn check_refused_or_cut(top: &str, bad: &[u8], status: u16) {
    let (p, mut farm) = setup(top);
    let mut c = Client::connect(p.client_addr());
    c.send(bad);
    match c.try_read_response(false) {
        Ok(r) => assert_error_response(&r, status),
        Err(e) => {
            assert!(
                e.partial.is_none(),
                "a response started for a bad request: {e:?}"
            );
            assert!(
                e.error.kind() != std::io::ErrorKind::TimedOut,
                "connection neither answered nor closed: {e:?}"
            );
        }
    }
    assert!(c.is_closed(Duration::from_secs(3)), "connection left open");
    healthy_request_works(&p, &mut farm);
    farm.settle(Duration::from_millis(150));
    let bad: Vec<_> = farm
        .seen
        .iter()
        .filter(|s| s.complete && s.contains("BADTOK"))
        .collect();
    assert!(
        bad.is_empty(),
        "a backend received the complete bad request: {bad:?}"
    );
}

#[test]
fn content_length_and_transfer_encoding_400() {
    check_refused(
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn transfer_encoding_then_content_length_400() {
    check_refused(
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn differing_content_lengths_400() {
    check_refused(
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    );
}

#[test]
fn non_numeric_content_length_400() {
    check_refused(
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5x\r\n\r\nhello",
        400,
    );
}

#[test]
fn signed_content_length_400() {
    check_refused(
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nContent-Length: +5\r\n\r\nhello",
        400,
    );
}

#[test]
fn negative_content_length_400() {
    check_refused(
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nContent-Length: -1\r\n\r\n",
        400,
    );
}

#[test]
fn transfer_encoding_not_chunked_501() {
    check_refused(
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\nxxxx",
        501,
    );
}

#[test]
fn transfer_encoding_on_http10_400() {
    check_refused(
        b"POST /BADTOK HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn obs_fold_400() {
    check_refused(
        b"GET /BADTOK HTTP/1.1\r\nHost: app.test\r\nX-Folded: a\r\n  b\r\n\r\n",
        400,
    );
}

#[test]
fn obs_fold_with_tab_400() {
    check_refused(
        b"GET /BADTOK HTTP/1.1\r\nHost: app.test\r\nX-Folded: a\r\n\tb\r\n\r\n",
        400,
    );
}

#[test]
fn whitespace_before_colon_400() {
    check_refused(
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nContent-Length : 5\r\n\r\nhello",
        400,
    );
}

#[test]
fn tab_before_colon_400() {
    check_refused(
        b"GET /BADTOK HTTP/1.1\r\nHost: app.test\r\nX-Thing\t: 1\r\n\r\n",
        400,
    );
}

#[test]
fn invalid_header_name_byte_400() {
    check_refused(
        b"GET /BADTOK HTTP/1.1\r\nHost: app.test\r\nX@Bad: 1\r\n\r\n",
        400,
    );
}

#[test]
fn control_byte_in_header_name_400() {
    check_refused(
        b"GET /BADTOK HTTP/1.1\r\nHost: app.test\r\nX\x01Bad: 1\r\n\r\n",
        400,
    );
}

#[test]
fn duplicate_host_400() {
    check_refused(
        b"GET /BADTOK HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n\r\n",
        400,
    );
}

#[test]
fn http11_without_host_400() {
    check_refused(b"GET /BADTOK HTTP/1.1\r\nAccept: */*\r\n\r\n", 400);
}

#[test]
fn malformed_chunk_size_400_or_closed() {
    check_refused_or_cut(
        "",
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn overflowing_chunk_size_400_or_closed() {
    check_refused_or_cut(
        "",
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000000005\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn negative_chunk_size_400_or_closed() {
    check_refused_or_cut(
        "",
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        400,
    );
}

#[test]
fn chunk_data_without_crlf_400_or_closed() {
    check_refused_or_cut(
        "",
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        400,
    );
}

#[test]
fn head_over_max_header_bytes_431() {
    let big = "v".repeat(2000);
    check_refused_with(
        "max_header_bytes: 1024",
        format!("GET /BADTOK HTTP/1.1\r\nHost: app.test\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        true,
        431,
    );
}

#[test]
fn request_line_over_max_header_bytes_414() {
    let long = "a".repeat(2000);
    check_refused_with(
        "max_header_bytes: 1024",
        format!("GET /BADTOK/{long} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes(),
        true,
        414,
    );
}

#[test]
fn head_within_max_header_bytes_is_fine() {
    let (p, _farm) = setup("max_header_bytes: 1024");
    let v = "v".repeat(700);
    let mut c = Client::connect(p.client_addr());
    let r =
        c.request(format!("GET /fits HTTP/1.1\r\nHost: app.test\r\nX-Big: {v}\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn too_many_headers_431() {
    let mut req = String::from("GET /BADTOK HTTP/1.1\r\nHost: app.test\r\n");
    for i in 0..120 {
        req.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    check_refused(req.as_bytes(), 431);
}

#[test]
fn ninety_headers_are_fine() {
    let (p, _farm) = setup("");
    let mut req = String::from("GET /many HTTP/1.1\r\nHost: app.test\r\n");
    for i in 0..90 {
        req.push_str(&format!("X-H{i}: {i}\r\n"));
    }
    req.push_str("\r\n");
    let mut c = Client::connect(p.client_addr());
    let r = c.request(req.as_bytes());
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn content_length_over_max_body_bytes_413() {
    // Head only: the proxy knows from Content-Length alone.
    check_refused_with(
        "max_body_bytes: 1000",
        b"POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5000\r\n\r\n",
        false,
        413,
    );
}

#[test]
fn chunked_body_over_max_body_bytes_413_or_closed() {
    let chunk = "c".repeat(200);
    let mut req = String::from(
        "POST /BADTOK HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for _ in 0..5 {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    check_refused_or_cut("max_body_bytes: 500", req.as_bytes(), 413);
}

#[test]
fn body_within_max_body_bytes_is_fine() {
    let (p, _farm) = setup("max_body_bytes: 1000");
    let body = "b".repeat(1000);
    let mut c = Client::connect(p.client_addr());
    let r = c.request(
        format!("POST /fits HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000\r\n\r\n{body}")
            .as_bytes(),
    );
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn incomplete_head_408_after_header_timeout() {
    let (p, mut farm) = setup("header_timeout: 1");
    let mut c = Client::connect(p.client_addr());
    let t = Instant::now();
    c.send(b"GET /BADTOK HTTP/1.1\r\nHost: app.test\r\n");
    let r = c.read_response(false);
    let took = t.elapsed();
    assert_error_response(&r, 408);
    assert!(
        took >= Duration::from_millis(800),
        "408 before header_timeout ({took:?})"
    );
    assert!(took < Duration::from_secs(5), "408 late ({took:?})");
    assert!(c.is_closed(Duration::from_secs(3)));
    healthy_request_works(&p, &mut farm);
    nothing_bad_reached_backends(&mut farm);
}

#[test]
fn trickled_head_408_after_header_timeout() {
    let (p, mut farm) = setup("header_timeout: 1");
    let mut c = Client::connect(p.client_addr());
    let t = Instant::now();
    // One byte every 100 ms: activity must not extend the head deadline.
    let head = b"GET /BADTOK HTTP/1.1\r\nHost: app.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    for b in head.iter() {
        if c.try_send(&[*b]).is_err() || t.elapsed() > Duration::from_secs(4) {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        if !c.conn.buffered().is_empty() {
            break;
        }
        // peek for an early answer without blocking long
        let _ = c.conn.stream.set_nonblocking(true);
        let got = c.conn.fill();
        let _ = c.conn.stream.set_nonblocking(false);
        if matches!(got, Ok(0)) || (got.is_ok() && !c.conn.buffered().is_empty()) {
            break;
        }
    }
    let r = c.read_response(false);
    let took = t.elapsed();
    assert_error_response(&r, 408);
    assert!(
        took < Duration::from_millis(3500),
        "trickled head not cut at header_timeout ({took:?})"
    );
    healthy_request_works(&p, &mut farm);
    nothing_bad_reached_backends(&mut farm);
}

#[test]
fn garbage_request_line_400() {
    check_refused_with(
        "",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03BADTOK\r\n\r\n",
        false,
        400,
    );
}

#[test]
fn refused_requests_are_counted_in_health() {
    let (p, _farm) = setup("");
    for _ in 0..2 {
        let mut c = Client::connect(p.client_addr());
        let r = c.request(b"GET /BADTOK HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        assert_eq!(r.status, 400);
    }
    let r = get_once(p.client_addr(), "app.test", "/swiftiply_health");
    assert_eq!(r.status, 200);
    assert!(r.body_str().lines().any(|l| l.trim() == "400:2"), "{r:?}");
}
