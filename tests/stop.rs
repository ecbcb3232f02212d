//! SIGTERM and SIGINT stop the proxy gracefully: no new connections,
//! requests in flight finish (up to `shutdown_timeout`), exit status 0. A
//! second signal stops it at once.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(10);
/// What a worker logs once it has taken the stop.
const STOPPING: &str = "client connections with requests in flight";

#[test]
fn sigterm_lets_a_slow_request_in_flight_finish_and_exits_0() {
    for (top, sig) in [("", libc::SIGTERM), ("workers: 2", libc::SIGINT)] {
        let mut p = Proxy::start(&one_section(top, ""));
        // Two backends: with two workers, one on each.
        let mut farm = EchoFarm::start(p.backend_addr(0), "", 2, false);
        assert!(p.wait_for_log_count(" joined section ", 2, T));
        let client_addr = p.client_addr();
        let mut idle = Client::connect(client_addr);
        assert_eq!(idle.get("app.test", "/first").status, 200);

        let mut slow = Client::connect(client_addr);
        slow.send(b"GET /sleep=700 HTTP/1.1\r\nHost: app.test\r\n\r\n");
        assert!(farm.wait_for(T, |s| s.target == "/sleep=700"));
        p.signal(sig);
        // Every worker has taken the stop.
        let workers = if top.is_empty() { 1 } else { 2 };
        assert!(
            p.wait_for_log_count(STOPPING, workers, T),
            "{}",
            p.stderr_text()
        );

        // No new connections; the idle keep-alive one is closed.
        assert!(eventually(T, || TcpStream::connect(client_addr).is_err()));
        assert!(idle.is_closed(T));
        // The slow one gets its whole response, marked as the last.
        let r = slow.read_response(false);
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body_contains("GET /sleep=700 "));
        assert!(r.says_close(), "{r:?}");
        let status = p
            .wait_exit(T)
            .expect("the proxy exits after its last request");
        assert_eq!(status.code(), Some(0), "{}", p.stderr_text());
        assert_eq!(
            p.log_count("stopped: every request finished"),
            if top.is_empty() { 1 } else { 2 }
        );
    }
}

#[test]
fn with_nothing_in_flight_the_proxy_exits_at_once() {
    let mut p = Proxy::start(&one_section("shutdown_timeout: 60", ""));
    let _farm = EchoFarm::start(p.backend_addr(0), "", 2, false);
    let mut c = Client::connect(p.client_addr());
    assert_eq!(c.get("app.test", "/").status, 200);
    let started = Instant::now();
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(T).expect("exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn shutdown_timeout_cuts_what_is_left_and_a_second_signal_stops_at_once() {
    // shutdown_timeout: 1 cuts a request that needs 20 s.
    let mut p = Proxy::start(&one_section("shutdown_timeout: 1", ""));
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /sleep=20000 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert!(farm.wait_for(T, |s| s.target == "/sleep=20000"));
    let started = Instant::now();
    p.signal(libc::SIGTERM);
    let status = p.wait_exit(T).expect("exits at shutdown_timeout");
    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(p
        .stderr_text()
        .contains("shutdown_timeout passed: closing 1 client connections"));
    assert!(c.is_closed(T));

    // A second signal does not wait for the 60 s.
    let mut p = Proxy::start(&one_section("shutdown_timeout: 60", ""));
    let mut farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /sleep=20000 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert!(farm.wait_for(T, |s| s.target == "/sleep=20000"));
    p.signal(libc::SIGTERM);
    assert!(p.wait_for_log(STOPPING, T));
    let started = Instant::now();
    p.signal(libc::SIGINT);
    let status = p.wait_exit(T).expect("exits on the second signal");
    assert_eq!(status.code(), Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(p.stderr_text().contains("SIGINT again: stopping at once"));
}

#[test]
fn a_queued_request_and_one_just_sent_are_still_served_during_the_stop() {
    let mut p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("stop", 1), "");
    assert!(p.wait_for_log(" joined section ", T));
    let mut c1 = Client::connect(p.client_addr());
    c1.send(b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let req1 = b.expect_request();
    // The only backend is busy: this one waits in the queue (or is still
    // unread in its socket when the stop begins; it counts all the same).
    let mut c2 = Client::connect(p.client_addr());
    c2.send(b"GET /two HTTP/1.1\r\nHost: app.test\r\n\r\n");
    p.signal(libc::SIGTERM);
    assert!(p.wait_for_log(STOPPING, T));

    b.respond_echo(&req1);
    let r1 = c1.read_response(false);
    assert!(r1.status == 200 && r1.body_contains("GET /one "), "{r1:?}");
    let req2 = b.expect_request();
    b.respond_echo(&req2);
    let r2 = c2.read_response(false);
    assert!(r2.status == 200 && r2.body_contains("GET /two "), "{r2:?}");
    assert!(r2.says_close(), "{r2:?}");
    let status = p.wait_exit(T).expect("exits once both are served");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_connection_opened_just_before_the_stop_still_gets_its_request_served() {
    let mut p = Proxy::start(&one_section("", ""));
    let _farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    assert!(p.wait_for_log(" joined section ", T));
    // Connected, nothing sent yet: the client may be about to send.
    let mut c = Client::connect(p.client_addr());
    p.signal(libc::SIGTERM);
    assert!(p.wait_for_log(STOPPING, T));
    c.send(b"GET /late HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let r = c.read_response(false);
    assert!(r.status == 200 && r.body_contains("GET /late "), "{r:?}");
    assert!(r.says_close(), "{r:?}");
    let status = p.wait_exit(T).expect("exits after serving it");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_sighup_during_the_stop_is_ignored_and_the_backends_stay() {
    let mut p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("hup", 1), "");
    assert!(p.wait_for_log(" joined section ", T));
    // A request in flight, and another whose head is half sent.
    let mut c1 = Client::connect(p.client_addr());
    c1.send(b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let req1 = b.expect_request();
    let mut c2 = Client::connect(p.client_addr());
    c2.send(b"GET /two HTTP/1.1\r\nHost: app");
    p.signal(libc::SIGTERM);
    assert!(p.wait_for_log(STOPPING, T));
    p.signal(libc::SIGHUP);
    assert!(p.wait_for_log("SIGHUP: ignored, the proxy is stopping", T));
    c2.send(b".test\r\n\r\n");
    b.respond_echo(&req1);
    assert_eq!(c1.read_response(false).status, 200);
    // The same backend, still pooled, serves the second one.
    let req2 = b.expect_request();
    b.respond_echo(&req2);
    let r2 = c2.read_response(false);
    assert!(r2.status == 200 && r2.body_contains("GET /two "), "{r2:?}");
    assert_eq!(p.wait_exit(T).and_then(|s| s.code()), Some(0));
    assert_eq!(p.log_count(" left section "), 0, "{}", p.stderr_text());
}
