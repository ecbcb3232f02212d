//! Backend handshake and pool behaviour (docs/protocol.md, "Handshake" and "Backend lifecycle"), queueing and
//! the 503 queue timeout (§3).

mod common;

use common::*;
use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant};

#[test]
fn handshake_split_into_many_writes_is_accepted() {
    let p = Proxy::start(&one_section("", "key: s3cret"));
    let id = id12("split", 1);
    let mut b = Backend::connect_split(
        p.backend_addr(0),
        &id,
        "s3cret",
        &[1, 3, 7, 1, 2, 5],
        Duration::from_millis(15),
    );
    let h = thread::spawn(move || b.echo_one());
    let r = get_once(p.client_addr(), "app.test", "/split");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some(id.as_str()));
    let seen = join_within(h, Duration::from_secs(20), "backend");
    assert_eq!(seen.target, "/split");
}

#[test]
fn handshake_with_key_and_without() {
    let p = Proxy::start(&config(
        "",
        &[
            "incoming: keyed.test\noutgoing: 127.0.0.1:0\nkey: s3cret",
            "incoming: open.test\noutgoing: 127.0.0.1:0",
        ],
    ));
    let keyed = EchoFarm::start(p.backend_addr(0), "s3cret", 1, false);
    let open = EchoFarm::start(p.backend_addr(1), "", 1, false);
    let r = get_once(p.client_addr(), "keyed.test", "/k");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some(keyed.ids[0].as_str()));
    let r = get_once(p.client_addr(), "open.test", "/o");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some(open.ids[0].as_str()));
}

/// A request to a section whose only backends were refused must wait for the
/// queue timeout and get 503.
fn assert_503_after_timeout(p: &Proxy) {
    let t = Instant::now();
    let r = get_once(p.client_addr(), "app.test", "/nobody");
    let took = t.elapsed();
    assert_error_response(&r, 503);
    assert!(r.body.starts_with(b"Server Unavailable"), "{r:?}");
    assert!(
        took >= Duration::from_millis(800),
        "503 came before `timeout: 1` elapsed ({took:?})"
    );
    assert!(took < Duration::from_secs(5), "503 came late ({took:?})");
}

#[test]
fn wrong_key_is_refused() {
    let p = Proxy::start(&one_section("timeout: 1", "key: s3cret"));
    let mut b = Backend::connect(p.backend_addr(0), &id12("wrongk", 1), "s3creT");
    assert!(
        b.is_closed(Duration::from_secs(3)),
        "proxy kept a backend with a wrong key"
    );
    assert_503_after_timeout(&p);
}

#[test]
fn missing_key_is_refused() {
    let p = Proxy::start(&one_section("timeout: 1", "key: s3cret"));
    let mut b = Backend::connect(p.backend_addr(0), &id12("nokey", 1), "");
    assert!(
        b.is_closed(Duration::from_secs(3)),
        "proxy kept a backend without the key"
    );
    assert_503_after_timeout(&p);
}

#[test]
fn key_sent_to_keyless_section_is_refused() {
    let p = Proxy::start(&one_section("timeout: 1", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("xkey", 1), "unexpected");
    assert!(
        b.is_closed(Duration::from_secs(3)),
        "keyless section accepted a key"
    );
    assert_503_after_timeout(&p);
}

#[test]
fn bad_magic_is_refused() {
    let p = Proxy::start(&one_section("timeout: 1", ""));
    let mut b = Backend::connect_raw(
        p.backend_addr(0),
        "badmagic0001",
        b"swiftclienXbadmagic000100",
    );
    assert!(
        b.is_closed(Duration::from_secs(3)),
        "proxy kept a backend with a bad magic"
    );
    assert_503_after_timeout(&p);
}

#[test]
fn non_hex_key_length_is_refused() {
    let p = Proxy::start(&one_section("timeout: 1", ""));
    let mut b = Backend::connect_raw(
        p.backend_addr(0),
        "badlen000001",
        b"swiftclientbadlen000001zz",
    );
    assert!(
        b.is_closed(Duration::from_secs(3)),
        "proxy kept a backend with a non-hex key length"
    );
    assert_503_after_timeout(&p);
}

#[test]
fn http_request_on_backend_port_is_refused() {
    let p = Proxy::start(&one_section("timeout: 1", ""));
    let mut b = Backend::connect_raw(
        p.backend_addr(0),
        "http00000001",
        b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n",
    );
    assert!(
        b.is_closed(Duration::from_secs(3)),
        "proxy kept an HTTP client on the backend port"
    );
}

#[test]
fn idle_backend_that_closes_is_removed() {
    let p = Proxy::start(&one_section("timeout: 1", ""));
    let b = Backend::connect(p.backend_addr(0), &id12("gone", 1), "");
    // Give the proxy a moment to take the handshake, then go away.
    thread::sleep(Duration::from_millis(150));
    drop(b);
    thread::sleep(Duration::from_millis(150));
    // The request must wait for the queue timeout (503), not be dispatched
    // into the dead socket (502) or hang.
    assert_503_after_timeout(&p);
}

#[test]
fn no_backends_gives_503_after_queue_timeout() {
    let p = Proxy::start(&one_section("timeout: 1", ""));
    let mut c = Client::connect(p.client_addr());
    let t = Instant::now();
    let r = c.get("app.test", "/queued");
    let took = t.elapsed();
    assert_error_response(&r, 503);
    assert!(r.body.starts_with(b"Server Unavailable"), "{r:?}");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "connection not closed after 503"
    );
}

#[test]
fn fractional_timeout_is_honoured() {
    let p = Proxy::start(&one_section("timeout: 0.5", ""));
    let t = Instant::now();
    let r = get_once(p.client_addr(), "app.test", "/queued");
    let took = t.elapsed();
    assert_error_response(&r, 503);
    assert!(
        took >= Duration::from_millis(350) && took < Duration::from_millis(2500),
        "took {took:?}"
    );
}

#[test]
fn queued_request_is_served_by_a_backend_that_connects_later() {
    let p = Proxy::start(&one_section("timeout: 5", ""));
    let addr = p.client_addr();
    let client = thread::spawn(move || get_once(addr, "app.test", "/waiting"));
    thread::sleep(Duration::from_millis(300));
    let farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let r = join_within(client, Duration::from_secs(15), "client");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some(farm.ids[0].as_str()));
}

#[test]
fn hundred_concurrent_clients_over_four_backends() {
    let p = Proxy::start(&one_section("timeout: 20", ""));
    let farm = EchoFarm::start(p.backend_addr(0), "", 4, false);
    let addr = p.client_addr();
    let handles: Vec<_> = (0..100)
        .map(|i| {
            thread::spawn(move || {
                let tok = format!("tok-{i}-{}", i * 7919);
                let mut c = Client::connect(addr);
                let body = format!("payload-of-{tok}");
                let r = c.request(
                    format!(
                        "POST /c/{tok}/sleep=10 HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
                assert_eq!(r.status, 200, "client {i}: {r:?}");
                assert!(r.body_contains(&format!("/c/{tok}/")), "client {i} got another client's response: {r:?}");
                assert!(r.body_contains(&body), "client {i}: {r:?}");
                r.header("x-backend").unwrap().to_string()
            })
        })
        .collect();
    let mut used = HashSet::new();
    for h in handles {
        used.insert(join_within(h, Duration::from_secs(60), "client"));
    }
    assert!(
        used.len() >= 2,
        "100 concurrent requests all went to one of 4 backends: {used:?} of {:?}",
        farm.ids
    );
}

#[test]
fn queued_client_that_disconnects_never_reaches_a_backend() {
    let p = Proxy::start(&one_section("timeout: 10", ""));
    let mut a = Client::connect(p.client_addr());
    a.send(b"GET /abandoned HTTP/1.1\r\nHost: app.test\r\n\r\n");
    thread::sleep(Duration::from_millis(200));
    drop(a);
    let addr = p.client_addr();
    let b = thread::spawn(move || get_once(addr, "app.test", "/patient"));
    thread::sleep(Duration::from_millis(300));

    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let r = join_within(b, Duration::from_secs(15), "second client");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_contains("/patient"), "{r:?}");
    farm.settle(Duration::from_millis(300));
    let targets: Vec<_> = farm
        .complete_requests()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(
        targets,
        vec!["/patient".to_string()],
        "the abandoned request reached a backend"
    );
}

#[test]
fn backend_that_talks_while_idle_is_dropped() {
    let p = Proxy::start(&one_section("timeout: 1", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("chatty", 1), "");
    thread::sleep(Duration::from_millis(150));
    b.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nbogus");
    assert!(
        b.is_closed(Duration::from_secs(3)),
        "a backend that sent bytes while idle was kept"
    );
    assert_503_after_timeout(&p);
}

#[test]
fn queued_requests_are_served_in_arrival_order() {
    let p = Proxy::start(&one_section("timeout: 10", ""));
    let addr = p.client_addr();
    let mut clients = Vec::new();
    for i in 0..5 {
        clients.push(thread::spawn(move || {
            get_once(addr, "app.test", &format!("/order/{i}"))
        }));
        thread::sleep(Duration::from_millis(60));
    }
    thread::sleep(Duration::from_millis(200));
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    for (i, c) in clients.into_iter().enumerate() {
        let r = join_within(c, Duration::from_secs(20), "client");
        assert_eq!(r.status, 200, "client {i}: {r:?}");
    }
    farm.settle(Duration::from_millis(100));
    let order: Vec<_> = farm
        .complete_requests()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    let want: Vec<_> = (0..5).map(|i| format!("/order/{i}")).collect();
    assert_eq!(order, want, "waiting requests not served oldest first");
}

#[test]
fn incomplete_handshake_is_dropped_after_a_few_seconds() {
    let p = Proxy::start(&one_section("timeout: 1", ""));
    let mut b = Backend::connect_raw(p.backend_addr(0), "partial00001", b"swiftclientpartial0");
    let t = Instant::now();
    assert!(
        b.is_closed(Duration::from_secs(12)),
        "a half-sent handshake was kept more than 12 s"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "closed before the handshake could complete"
    );
}
