//! Routing by Host / absolute-form authority, default section, 404,
//! X-Forwarded-For, several sections and outgoing addresses, byte-for-byte
//! head forwarding, health endpoint (docs/protocol.md#requests, docs/request-framing.md).

mod common;

use common::*;
use std::thread;
use std::time::{Duration, Instant};

fn two_sections(default_on_beta: bool) -> String {
    config(
        "",
        &[
            "incoming: alpha.test\noutgoing: 127.0.0.1:0",
            &format!(
                "incoming: [beta.test, www.beta.test]\noutgoing: 127.0.0.1:0{}",
                if default_on_beta {
                    "\ndefault: true"
                } else {
                    ""
                }
            ),
        ],
    )
}

fn backend_of(r: &Response) -> String {
    r.header("x-backend")
        .unwrap_or_else(|| panic!("response not from an echo backend: {r:?}"))
        .to_string()
}

#[test]
fn host_routing_is_case_insensitive_and_ignores_port() {
    let p = Proxy::start(&two_sections(false));
    let a = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let b = EchoFarm::start(p.backend_addr(1), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    for (host, want) in [
        ("alpha.test", &a.ids[0]),
        ("ALPHA.Test:8080", &a.ids[0]),
        ("beta.test", &b.ids[0]),
        ("Www.Beta.TEST:443", &b.ids[0]),
        ("beta.test:1", &b.ids[0]),
    ] {
        let r = c.get(host, "/route");
        assert_eq!(r.status, 200, "Host {host}: {r:?}");
        assert_eq!(
            &backend_of(&r),
            want,
            "Host {host} went to the wrong section"
        );
    }
}

#[test]
fn absolute_form_is_rewritten_and_routed_by_authority() {
    let p = Proxy::start(&two_sections(false));
    let _a = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let mut b = Backend::connect(p.backend_addr(1), &id12("abs", 1), "");
    let h = thread::spawn(move || (b.echo_one(), b.echo_one()));
    let mut c = Client::connect(p.client_addr());

    let r = c.request(
        b"GET http://beta.test:8080/p/q?x=1&y=2 HTTP/1.1\r\nHost: beta.test:8080\r\nX-A: 1\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = c.request(b"GET http://WWW.BETA.test HTTP/1.1\r\nHost: www.beta.test\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    // A Host naming another authority than the target's is refused
    // (RFC 9112 §3.2.2: the backend must see the target's authority).
    let mut other = Client::connect(p.client_addr());
    let r = other.request(b"GET http://beta.test/auth HTTP/1.1\r\nHost: alpha.test\r\n\r\n");
    assert_eq!(r.status, 400, "{r:?}");

    let (r1, r2) = join_within(h, Duration::from_secs(20), "beta backend");
    assert_eq!(
        r1.head_str(),
        "GET /p/q?x=1&y=2 HTTP/1.1\r\nHost: beta.test:8080\r\nX-A: 1\r\n\r\n",
        "absolute-form not rewritten to origin-form (the rest unchanged)"
    );
    assert_eq!(
        r2.head_str(),
        "GET / HTTP/1.1\r\nHost: www.beta.test\r\n\r\n",
        "empty path must become /"
    );
}

#[test]
fn absolute_form_with_empty_path_and_query() {
    let p = Proxy::start(&two_sections(false));
    let mut b = Backend::connect(p.backend_addr(1), &id12("absq", 1), "");
    let h = thread::spawn(move || b.echo_one());
    let mut c = Client::connect(p.client_addr());
    let r = c.request(b"GET http://beta.test:80?x=1 HTTP/1.1\r\nHost: beta.test\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = join_within(h, Duration::from_secs(20), "backend");
    assert_eq!(
        seen.head_str(),
        "GET /?x=1 HTTP/1.1\r\nHost: beta.test\r\n\r\n"
    );
}

#[test]
fn absolute_form_without_host_header_on_http10() {
    let p = Proxy::start(&two_sections(false));
    let mut b = Backend::connect(p.backend_addr(1), &id12("abs10", 1), "");
    let h = thread::spawn(move || b.echo_one());
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET http://beta.test/ten?q HTTP/1.0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = join_within(h, Duration::from_secs(20), "backend");
    // The backend is told the host the request was routed by.
    assert_eq!(
        seen.head_str(),
        "GET /ten?q HTTP/1.0\r\nHost: beta.test\r\n\r\n"
    );
}

#[test]
fn unknown_host_goes_to_default_section() {
    let p = Proxy::start(&two_sections(true));
    let _a = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let b = EchoFarm::start(p.backend_addr(1), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    for host in ["unknown.test", "alpha.test.evil", "localhost:99"] {
        let r = c.get(host, "/d");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(
            backend_of(&r),
            b.ids[0],
            "Host {host} should go to the default section"
        );
    }
    // HTTP/1.0 without Host also goes to the default.
    let mut c = Client::connect(p.client_addr());
    c.send(b"GET /nohost HTTP/1.0\r\n\r\n");
    let r = c.read_response(false);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(backend_of(&r), b.ids[0]);
}

#[test]
fn unknown_host_without_default_is_404() {
    let p = Proxy::start(&two_sections(false));
    let mut a = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let _b = EchoFarm::start(p.backend_addr(1), "", 1, false);
    let mut c = Client::connect(p.client_addr());
    let r = c.get("nowhere.test", "/missing");
    assert_error_response(&r, 404);
    assert!(r.body.starts_with(b"Resource not found."), "{r:?}");
    assert!(
        c.is_closed(Duration::from_secs(3)),
        "connection not closed after 404"
    );
    // And known hosts still work.
    let r = get_once(p.client_addr(), "alpha.test", "/ok");
    assert_eq!(r.status, 200);
    a.settle(Duration::from_millis(100));
    assert!(
        a.seen_containing("/missing").is_empty(),
        "404 request reached a backend"
    );
}

#[test]
fn x_forwarded_for_added_when_absent() {
    let p = Proxy::start(&one_section("", "xforwardedfor: true"));
    let mut b = Backend::connect(p.backend_addr(0), &id12("xff", 1), "");
    let h = thread::spawn(move || b.echo_one());
    let mut c = Client::connect(p.client_addr());
    let r = c.request(b"GET /x HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let seen = join_within(h, Duration::from_secs(20), "backend");
    assert_eq!(
        seen.head_str(),
        "GET /x HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"
    );
}

#[test]
fn x_forwarded_for_appended_to_existing() {
    let p = Proxy::start(&one_section("", "xforwardedfor: true"));
    let mut b = Backend::connect(p.backend_addr(0), &id12("xff", 2), "");
    let h = thread::spawn(move || b.echo_one());
    let mut c = Client::connect(p.client_addr());
    let r = c.request(
        b"POST /x HTTP/1.1\r\nHost: app.test\r\nx-forwarded-for: 10.0.0.1\r\nContent-Length: 2\r\nAccept: */*\r\n\r\nhi",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = join_within(h, Duration::from_secs(20), "backend");
    assert_eq!(
        seen.head_str(),
        "POST /x HTTP/1.1\r\nHost: app.test\r\nx-forwarded-for: 10.0.0.1, 127.0.0.1\r\nContent-Length: 2\r\nAccept: */*\r\n\r\n"
    );
    assert_eq!(seen.body, b"hi");
}

#[test]
fn x_forwarded_for_appended_to_the_last_of_several() {
    let p = Proxy::start(&one_section("", "xforwardedfor: true"));
    let mut b = Backend::connect(p.backend_addr(0), &id12("xff", 4), "");
    let h = thread::spawn(move || b.echo_one());
    let mut c = Client::connect(p.client_addr());
    let r = c.request(
        b"GET /x HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nHost: app.test\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3\r\nAccept: */*\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let seen = join_within(h, Duration::from_secs(20), "backend");
    assert_eq!(
        seen.head_str(),
        "GET /x HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nHost: app.test\r\nX-Forwarded-For: 10.0.0.2, 10.0.0.3, 127.0.0.1\r\nAccept: */*\r\n\r\n"
    );
}

#[test]
fn x_forwarded_for_not_touched_when_off() {
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("xff", 3), "");
    let h = thread::spawn(move || b.echo_one());
    let req = b"GET /x HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 10.0.0.1\r\n\r\n";
    let mut c = Client::connect(p.client_addr());
    let r = c.request(req);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = join_within(h, Duration::from_secs(20), "backend");
    assert_eq!(seen.head, req.to_vec());
}

#[test]
fn several_sections_and_outgoing_addresses() {
    let p = Proxy::start(&config(
        "",
        &[
            "incoming: one.test\noutgoing: [127.0.0.1:0, 127.0.0.1:0]",
            "incoming: two.test\noutgoing: 127.0.0.1:0",
            "incoming: three.test\noutgoing: [127.0.0.1:0, 127.0.0.1:0, 127.0.0.1:0]",
        ],
    ));
    let one = p.backend_addrs(0);
    let two = p.backend_addrs(1);
    let three = p.backend_addrs(2);
    assert_eq!(one.len(), 2, "section 0 has two outgoing addresses");
    assert_eq!(two.len(), 1);
    assert_eq!(three.len(), 3);
    let mut all: Vec<_> = one.iter().chain(&two).chain(&three).collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 6, "outgoing addresses must be distinct");

    // A backend on the second address of section 0 serves section 0.
    let f1 = EchoFarm::start(one[1], "", 1, false);
    let f2 = EchoFarm::start(two[0], "", 1, false);
    let f3 = EchoFarm::start(three[2], "", 1, false);
    let mut c = Client::connect(p.client_addr());
    for (host, farm) in [
        ("one.test", &f1),
        ("two.test", &f2),
        ("three.test", &f3),
        ("ONE.test:1", &f1),
    ] {
        let r = c.get(host, "/s");
        assert_eq!(r.status, 200, "{host}: {r:?}");
        assert_eq!(
            backend_of(&r),
            farm.ids[0],
            "{host} went to the wrong section"
        );
    }
    // Two backends on the two addresses of section 0 share its queue.
    let f1b = EchoFarm::start(one[0], "", 1, false);
    let mut ids = std::collections::HashSet::new();
    let handles: Vec<_> = (0..2)
        .map(|i| {
            let addr = p.client_addr();
            thread::spawn(move || get_once(addr, "one.test", &format!("/both/{i}/sleep=400")))
        })
        .collect();
    for h in handles {
        let r = join_within(h, Duration::from_secs(20), "client");
        assert_eq!(r.status, 200, "{r:?}");
        ids.insert(backend_of(&r));
    }
    assert_eq!(ids.len(), 2, "two concurrent slow requests should use both backends of section 0: {ids:?} (f1 {:?}, f1b {:?})", f1.ids, f1b.ids);
}

#[test]
fn head_is_forwarded_byte_for_byte() {
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("bytes", 1), "");
    let h = thread::spawn(move || b.echo_one());
    let req: &[u8] = b"OPTIONS /a%20b/../c;p=1?q=%7E&r=~&empty= HTTP/1.1\r\n\
host: App.Test:80\r\n\
x-lower: value\r\n\
X-MiXeD-CaSe:no-space-after-colon\r\n\
X-Spaces:    lots   of   inner   spaces   \r\n\
X-Tab:\tleading tab\r\n\
X-Dup: one\r\n\
X-Dup: two\r\n\
X-Empty:\r\n\
X-Utf8: caf\xc3\xa9 \xe2\x82\xac\r\n\
X-Quote: \"a, b\", c;q=0.5\r\n\
Cookie: a=1; b=2\r\n\
Content-Length: 4\r\n\
\r\n\
body";
    let mut c = Client::connect(p.client_addr());
    let r = c.request(req);
    assert_eq!(r.status, 200, "{r:?}");
    let seen = join_within(h, Duration::from_secs(20), "backend");
    assert_eq!(
        String::from_utf8_lossy(&seen.raw),
        String::from_utf8_lossy(req),
        "request not forwarded byte for byte"
    );
    assert_eq!(seen.raw, req.to_vec());
    assert_eq!(r.body, req.to_vec(), "echo came back altered");
}

fn health_counter(body: &str, code: &str) -> u64 {
    body.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{code}:")))
        .unwrap_or_else(|| panic!("health body has no `{code}:N` line:\n{body}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("bad `{code}:` line in health body ({e}):\n{body}"))
}

#[test]
fn health_endpoint_counts_errors() {
    // No default section, one section without backends, timeout 1 s.
    let p = Proxy::start(&config(
        "timeout: 1",
        &["incoming: app.test\noutgoing: 127.0.0.1:0"],
    ));
    let r = get_once(p.client_addr(), "whatever.test", "/swiftiply_health");
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.body_str();
    assert_eq!(health_counter(&body, "400"), 0);
    assert_eq!(health_counter(&body, "404"), 0);
    assert_eq!(health_counter(&body, "503"), 0);

    let r = get_once(p.client_addr(), "nowhere.test", "/x");
    assert_eq!(r.status, 404, "{r:?}");
    let mut c = Client::connect(p.client_addr());
    let r = c.request(b"GET /x HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\n\r\n");
    assert_eq!(r.status, 400, "{r:?}");
    let t = Instant::now();
    let r = get_once(p.client_addr(), "app.test", "/x");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(t.elapsed() >= Duration::from_millis(800));

    let r = get_once(p.client_addr(), "app.test", "/swiftiply_health");
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.body_str();
    assert_eq!(health_counter(&body, "400"), 1, "{body}");
    assert_eq!(health_counter(&body, "404"), 1, "{body}");
    assert_eq!(health_counter(&body, "503"), 1, "{body}");
}

#[test]
fn health_endpoint_counts_bad_gateways_and_refused_handshakes() {
    let p = Proxy::start(&one_section("timeout: 5", "key: s3cret"));
    let mut wrong = Backend::connect(p.backend_addr(0), &id12("wrong", 1), "guess");
    assert!(
        wrong.is_closed(Duration::from_secs(5)),
        "wrong key was kept"
    );
    // A backend that reads the request and dies without answering: 502.
    let mut dying = Backend::connect(p.backend_addr(0), &id12("dies", 1), "s3cret");
    let h = std::thread::spawn(move || {
        let _ = dying.read_request();
    });
    let r = get_once(p.client_addr(), "app.test", "/x");
    assert_error_response(&r, 502);
    join_within(h, Duration::from_secs(10), "dying backend");

    let r = get_once(p.client_addr(), "app.test", "/swiftiply_health");
    assert_eq!(r.status, 200, "{r:?}");
    let body = r.body_str();
    assert_eq!(health_counter(&body, "refused_handshakes"), 1, "{body}");
    assert_eq!(health_counter(&body, "502"), 1, "{body}");
    assert_eq!(health_counter(&body, "504"), 0, "{body}");
}
