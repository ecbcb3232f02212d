//! Large bodies relayed backend → pipe → client with splice(2): every byte
//! arrives, in order, whatever the pace of either side, and a backend that
//! dies mid-body still cuts the client (docs/protocol.md#backend-failures).

mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

/// A body no two offsets of which are easily confused.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

fn response(body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

#[test]
fn a_large_body_arrives_intact_and_the_connection_goes_on() {
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("splice", 1), "");
    let big = pattern(3 * 1024 * 1024 + 17, 1);
    let served = big.clone();
    let backend = thread::spawn(move || {
        let r = b.expect_request();
        assert_eq!(r.target, "/big");
        // Head and body in uneven pieces with pauses, so the pipe fills and
        // empties many times.
        b.write_split(
            &response(&served),
            &[100, 70_000, 1_000_000, 3],
            Duration::from_millis(2),
        );
        let r = b.expect_request();
        assert_eq!(r.target, "/small");
        b.respond("200 OK", &[], b"small");
        b
    });
    let mut c = Client::connect(p.client_addr());
    let r = c.get("app.test", "/big");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), big.len(), "body length");
    assert!(r.body == big, "the large body arrived changed");
    let r = c.get("app.test", "/small");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"small"[..]));
    backend.join().unwrap();
}

#[test]
fn pipelined_large_and_small_responses_keep_their_order() {
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("splice", 2), "");
    let one = pattern(1024 * 1024, 2);
    let two = pattern(700_000, 3);
    let (a, z) = (one.clone(), two.clone());
    let backend = thread::spawn(move || {
        for body in [a, b"between".to_vec(), z] {
            b.expect_request();
            b.write(&response(&body));
        }
        b
    });
    let mut c = Client::connect(p.client_addr());
    c.send(
        b"GET /1 HTTP/1.1\r\nHost: app.test\r\n\r\n\
          GET /2 HTTP/1.1\r\nHost: app.test\r\n\r\n\
          GET /3 HTTP/1.1\r\nHost: app.test\r\n\r\n",
    );
    let r1 = c.read_response(false);
    let r2 = c.read_response(false);
    let r3 = c.read_response(false);
    assert!(r1.body == one, "first body ({} bytes)", r1.body.len());
    assert_eq!(r2.body, b"between");
    assert!(r3.body == two, "third body ({} bytes)", r3.body.len());
    backend.join().unwrap();
}

#[test]
fn a_slow_client_gets_every_byte_and_the_backend_is_not_held_by_it() {
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("splice", 3), "");
    let big = pattern(2 * 1024 * 1024, 4);
    let served = big.clone();
    let backend = thread::spawn(move || {
        b.expect_request();
        b.write(&response(&served));
        b
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let head = read_response_head(&mut c.conn)
        .unwrap()
        .expect("a response head");
    assert_eq!(head.status, 200);
    let mut got = Vec::with_capacity(big.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < big.len() {
        assert!(
            Instant::now() < deadline,
            "only {} bytes arrived",
            got.len()
        );
        let n = c
            .conn
            .read_some(16 * 1024, &mut |s| got.extend_from_slice(s))
            .unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        thread::sleep(Duration::from_millis(1));
    }
    assert!(got == big, "the body arrived changed");
    // The backend wrote everything long ago and is free for the next client.
    let mut b = backend.join().unwrap();
    let served = thread::spawn(move || {
        b.expect_request();
        b.respond("200 OK", &[], b"next");
    });
    let r = get_once(p.client_addr(), "app.test", "/next");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"next"[..]));
    served.join().unwrap();
}

#[test]
fn a_backend_that_dies_mid_body_cuts_the_client_and_the_proxy_goes_on() {
    let mut p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("splice", 4), "");
    let big = pattern(1024 * 1024, 5);
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n");
    b.expect_request();
    let full = response(&big);
    b.write(&full[..full.len() - big.len() + 300_000]);
    drop(b);
    let head = read_response_head(&mut c.conn)
        .unwrap()
        .expect("a response head");
    assert_eq!(head.status, 200);
    let mut got = 0u64;
    let outcome = c.conn.read_to_close(&mut |s| got += s.len() as u64);
    assert!(
        outcome.is_ok() || got < big.len() as u64,
        "the client was not cut: {outcome:?}"
    );
    assert!(got <= 300_000, "more bytes than the backend sent: {got}");
    p.assert_alive();
    let mut b2 = Backend::connect(p.backend_addr(0), &id12("splice", 5), "");
    let served = thread::spawn(move || {
        b2.expect_request();
        b2.respond("200 OK", &[], b"still here");
    });
    let r = get_once(p.client_addr(), "app.test", "/after");
    assert_eq!(r.status, 200);
    served.join().unwrap();
}

#[test]
fn an_http_1_0_client_gets_a_large_body_and_then_the_close() {
    let p = Proxy::start(&one_section("", ""));
    http_1_0_large_body(&p, 6);
}

#[test]
fn with_splice_off_large_bodies_are_copied_and_arrive_the_same() {
    let p = Proxy::start(&one_section("splice: false", ""));
    http_1_0_large_body(&p, 7);
    let out = p.stderr_text();
    assert!(!out.contains("splice(2) is not supported"), "{out}");
}

fn http_1_0_large_body(p: &Proxy, n: usize) {
    let mut b = Backend::connect(p.backend_addr(0), &id12("splice", n), "");
    let big = pattern(1024 * 1024 + 1, n as u8);
    let served = big.clone();
    let backend = thread::spawn(move || {
        b.expect_request();
        b.write(&response(&served));
        b
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /big HTTP/1.0\r\nHost: app.test\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200);
    assert!(r.body == big, "body of {} bytes", r.body.len());
    assert!(
        c.is_closed(Duration::from_secs(5)),
        "HTTP/1.0 connection left open"
    );
    backend.join().unwrap();
}

/// A body sent in bursts with pauses: whatever the proxy wrote with
/// MSG_MORE / SPLICE_F_MORE while more seemed to be coming must reach the
/// client during the pause, at once, not when the backend goes on nor when
/// the kernel's 200 ms cork timer fires. Burst sizes are multiples of the
/// buffer size (16 KiB) and of the pipe size, where a read fills its buffer
/// exactly and then finds nothing more.
fn bursts_reach_the_client_during_pauses(yaml: &str, n: usize) {
    let p = Proxy::start(yaml);
    let mut b = Backend::connect(p.backend_addr(0), &id12("burst", n), "");
    let bursts = [
        16_384usize,
        32_768,
        65_536,
        16_384,
        262_144,
        49_152,
        524_288,
        16_384,
    ];
    let total: usize = bursts.iter().sum();
    let body = pattern(total, n as u8);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Instant)>();
    let served = body.clone();
    let backend = thread::spawn(move || {
        b.expect_request();
        b.write(format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n").as_bytes());
        let mut at = 0;
        let mut delays = Vec::new();
        for len in bursts {
            b.write(&served[at..at + len]);
            let sent = Instant::now();
            at += len;
            // Wait until the client has all of it before sending more.
            let (got, when) = rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("the client never got the burst ending at {at}"));
            assert_eq!(got, at);
            delays.push(when.saturating_duration_since(sent));
        }
        delays
    });
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /bursts HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let head = read_response_head(&mut c.conn)
        .unwrap()
        .expect("a response head");
    assert_eq!(head.status, 200);
    let mut got = Vec::with_capacity(total);
    let mut at = 0;
    for len in bursts {
        at += len;
        while got.len() < at {
            let n = c
                .conn
                .read_some(at - got.len(), &mut |s| got.extend_from_slice(s));
            assert!(matches!(n, Ok(1..)), "read failed or closed: {n:?}");
        }
        tx.send((at, Instant::now())).unwrap();
    }
    assert!(got == body, "the body arrived changed");
    let mut delays = backend.join().unwrap();
    delays.sort();
    // Bytes held back show as delays of about 200 ms (the kernel's cork
    // timer), on every burst that ends on a full buffer; a busy machine may
    // delay one burst as much, not several.
    let late = delays
        .iter()
        .filter(|d| **d >= Duration::from_millis(150))
        .count();
    assert!(
        late <= 1,
        "{late} bursts reached the client late (sorted delays {delays:?})"
    );
}

#[test]
fn bursts_reach_the_client_during_pauses_when_spliced() {
    bursts_reach_the_client_during_pauses(&one_section("", ""), 1);
}

#[test]
fn bursts_reach_the_client_during_pauses_when_copied() {
    bursts_reach_the_client_during_pauses(&one_section("splice: false", ""), 2);
}
