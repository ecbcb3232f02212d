//! Request bodies before a backend is taken (docs/request-framing.md, "When
//! a backend is taken"): bodies larger than `request_buffer` are spooled to
//! disk and handed on whole; a spooled body can be redeployed; where the
//! spool is full, the rest of a body streams. In every case the backend
//! receives exactly the bytes the client framed.

mod common;

use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

fn chunked_body(total: usize, chunk: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut pieces = Vec::new();
    let mut whole = Vec::new();
    let mut left = total;
    let mut i = 0u8;
    while left > 0 {
        let n = left.min(chunk);
        let mut p = format!("{n:x}\r\n").into_bytes();
        p.extend(std::iter::repeat_n(b'a' + i % 26, n));
        p.extend_from_slice(b"\r\n");
        whole.extend_from_slice(&p);
        pieces.push(p);
        left -= n;
        i = i.wrapping_add(1);
    }
    pieces.push(b"0\r\nX-Sum: 1\r\n\r\n".to_vec());
    whole.extend_from_slice(b"0\r\nX-Sum: 1\r\n\r\n");
    (pieces, whole)
}

/// The body as the backend received it (after its head).
fn body_of(seen: &Seen) -> &[u8] {
    let end = seen
        .raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head")
        + 4;
    &seen.raw[end..]
}

#[test]
fn a_chunked_body_larger_than_request_buffer_waits_on_disk_and_arrives_whole() {
    let spool = TempDir::new("spool");
    let top = format!(
        "request_buffer: 1024\nrequest_spool_directory: {}",
        spool.path.display()
    );
    let p = Proxy::start(&one_section(&top, ""));
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    c.send(b"POST /spooled HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    let (pieces, whole) = chunked_body(200 * 1024, 4096);
    let (last, body) = pieces.split_last().unwrap();
    for piece in body {
        c.send(piece);
    }
    // Everything but the last chunk is in: still no backend has the request,
    // and the spool file has no name in its directory.
    farm.settle(Duration::from_millis(200));
    assert!(
        farm.seen.is_empty(),
        "a backend got the request before its body was complete: {:?}",
        farm.seen
            .first()
            .map(|s| String::from_utf8_lossy(&s.raw[..80]))
    );
    let names = std::fs::read_dir(&spool.path).unwrap().count();
    assert_eq!(names, 0, "a spooled body left a file in the directory");
    c.send(last);
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(farm.wait_for(WAIT, |s| s.complete && s.target == "/spooled"));
    let got = farm.seen.iter().find(|s| s.complete).unwrap();
    assert!(
        body_of(got) == &whole[..],
        "the backend got other body bytes"
    );
    // The same connection goes on.
    let r = c.get("app.test", "/after");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn a_spooled_body_is_redeployed_whole_after_a_backend_fails() {
    let p = Proxy::start(&one_section(
        "request_buffer: 1024",
        "redeployable: true\nredeployment_sizelimit: 65536",
    ));
    // The first backend takes the request and dies before answering.
    let mut failing = Backend::connect(p.backend_addr(0), &id12("dies", 1), "");
    let mut c = Client::connect(p.client_addr());
    let body: Vec<u8> = (0..20_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    c.send(b"PUT /redeploy HTTP/1.1\r\nHost: app.test\r\nContent-Length: 20000\r\n\r\n");
    c.send(&body[..9000]);
    c.send(&body[9000..]);
    let head = failing.read_request_head().unwrap().expect("the request");
    assert_eq!(head.target, "/redeploy");
    drop(failing);
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(farm.wait_for(WAIT, |s| s.complete && s.target == "/redeploy"));
    let got = farm.seen.iter().find(|s| s.complete).unwrap();
    assert!(body_of(got) == &body[..], "the redeployed body differs");
}

#[test]
fn when_the_spool_is_full_the_rest_of_a_body_streams_after_what_was_spooled() {
    let p = Proxy::start(&one_section(
        "request_buffer: 1024\nrequest_spool_limit: 1048576",
        "",
    ));
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    c.send(b"POST /overflow HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    let (pieces, whole) = chunked_body(3 << 20, 65536);
    for piece in &pieces {
        c.send(piece);
    }
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(farm.wait_for(WAIT, |s| s.complete && s.target == "/overflow"));
    let got = farm.seen.iter().find(|s| s.complete).unwrap();
    assert_eq!(body_of(got).len(), whole.len());
    assert!(
        body_of(got) == &whole[..],
        "the backend got other body bytes"
    );
}

#[test]
fn a_body_larger_than_the_spool_streams_from_the_start() {
    let p = Proxy::start(&one_section(
        "request_buffer: 1024\nrequest_spool_limit: 1048576",
        "",
    ));
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    let body = vec![b'z'; 2 << 20];
    c.send(b"POST /big HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2097152\r\n\r\n");
    c.send(&body[..100_000]);
    // Streamed: the backend has the head while most of the body is unsent.
    assert!(
        farm.wait_for(WAIT, |s| !s.complete && s.target == "/big"),
        "the head of a body too large to spool did not go ahead"
    );
    c.send(&body[100_000..]);
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(farm.wait_for(WAIT, |s| s.complete && s.target == "/big"));
    let got = farm.seen.iter().find(|s| s.complete).unwrap();
    assert!(body_of(got) == &body[..]);
}

#[test]
fn a_bad_chunk_inside_a_spooled_body_is_refused_without_a_backend() {
    let p = Proxy::start(&one_section("request_buffer: 1024\ntimeout: 1", ""));
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    c.send(b"POST /bad HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n");
    let (pieces, _) = chunked_body(8192, 4096);
    c.send(&pieces[0]);
    c.send(&pieces[1]);
    c.send(b"zz\r\n");
    let r = c.read_response(false);
    assert_error_response(&r, 400);
    farm.settle(Duration::from_millis(100));
    assert!(farm.seen.is_empty(), "the bad request reached a backend");
    // The one backend connection was never touched: it serves at once.
    let r = get_once(p.client_addr(), "app.test", "/next");
    assert_eq!(r.status, 200, "{r:?}");
}
