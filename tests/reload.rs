//! SIGHUP reloads the config in place: hosts, keys and sections change,
//! listeners come and go, and backends whose outgoing address stays keep
//! serving — idle or busy — while requests in flight finish.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(10);

/// A section's YAML lines (for `config`).
fn section(incoming: &str, outgoing: &str, extra: &str) -> String {
    format!("incoming: {incoming}\noutgoing: {outgoing}\n{extra}")
}

fn wait_joined(p: &Proxy, n: usize) {
    assert!(
        p.wait_for_log_count(" joined section ", n, T),
        "{n} backends did not join; stderr:\n{}",
        p.stderr_text()
    );
}

fn served_by(r: &Response) -> String {
    r.header("X-Backend")
        .unwrap_or_else(|| panic!("no X-Backend in {r:?}"))
        .to_string()
}

#[test]
fn a_reload_adds_a_host_changes_a_key_removes_a_section_and_keeps_the_idle_backends() {
    let mut p = Proxy::start(&config(
        "",
        &[
            &section("app.test", "127.0.0.1:0", "key: first-key"),
            &section("old.test", "127.0.0.1:0", ""),
        ],
    ));
    let (app, old) = (p.backend_addr(0), p.backend_addr(1));
    let app_farm = EchoFarm::start(app, "first-key", 2, false);
    let old_farm = EchoFarm::start(old, "", 1, false);
    wait_joined(&p, 3);

    let mut kept = Client::connect(p.client_addr());
    let r = kept.get("app.test", "/before");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(app_farm.ids.contains(&served_by(&r)));
    assert_eq!(get_once(p.client_addr(), "old.test", "/").status, 200);

    // app.test gains a name and a new key; old.test goes; the client port
    // (configured as 0) stays.
    p.reload(&config(
        "",
        &[&section(
            "[app.test, new.test]",
            &app.to_string(),
            "key: second-key",
        )],
    ))
    .expect("the reload is accepted");

    // The same backends, still connected, answer for the new name and the
    // old one, on a new connection and on one kept alive across the reload.
    let mut ids = BTreeSet::new();
    for i in 0..4 {
        let r = get_once(p.client_addr(), "new.test", &format!("/new{i}"));
        assert_eq!(r.status, 200, "{r:?}");
        ids.insert(served_by(&r));
    }
    let r = kept.get("app.test", "/after");
    assert_eq!(r.status, 200, "{r:?}");
    ids.insert(served_by(&r));
    assert_eq!(
        ids,
        app_farm.ids.iter().cloned().collect(),
        "{}",
        p.stderr_text()
    );
    assert_eq!(p.log_count(" joined section "), 3, "no backend rejoined");

    // The removed section: its host is unknown now, its idle backend was
    // closed, its backend port no longer listens.
    let r = get_once(p.client_addr(), "old.test", "/");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        p.wait_for_log("its outgoing address was removed by a reload", T),
        "{}",
        p.stderr_text()
    );
    assert!(eventually(T, || TcpStream::connect(old).is_err()));
    drop(old_farm);

    // The key changed: the old one is refused, the new one joins.
    let _refused = Backend::connect(app, &id12("oldkey", 1), "first-key");
    assert!(p.wait_for_log("refused a backend handshake", T));
    let _joined = Backend::connect(app, &id12("newkey", 1), "second-key");
    wait_joined(&p, 4);
    p.assert_alive();
}

#[test]
fn a_reload_adds_a_client_listener_and_stops_one() {
    let mut p = Proxy::start(&one_section("", ""));
    let first = p.client_addr();
    let farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    wait_joined(&p, 1);
    // A second port, found free now.
    let spare = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = spare.local_addr().unwrap().port();
    drop(spare);
    let yaml = |ports: &str| {
        config(
            &format!("cluster_port: {ports}"),
            &[&section(
                "app.test",
                &p.backend_addr(0).to_string(),
                "default: true",
            )],
        )
    };
    p.reload(&yaml(&format!("[{}, {port}]", first.port())))
        .expect("reload with a second port");
    let second: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get_once(second, "app.test", "/").status, 200);
    assert_eq!(get_once(first, "app.test", "/").status, 200);

    p.reload(&yaml(&port.to_string()))
        .expect("reload without the first port");
    assert!(eventually(T, || TcpStream::connect(first).is_err()));
    let r = get_once(second, "app.test", "/");
    assert_eq!(r.status, 200);
    assert!(farm.ids.contains(&served_by(&r)));
    p.assert_alive();
}

#[test]
fn an_invalid_config_or_an_unbindable_listener_keeps_the_old_config() {
    let mut p = Proxy::start(&one_section("", ""));
    let farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
    wait_joined(&p, 1);

    let err = p
        .reload("cluster_port: [this is not yaml\n")
        .expect_err("a broken file is refused");
    assert!(err.contains("config.yml"), "{err}");
    let err = p
        .reload(&one_section("", "no_such_key: 1"))
        .expect_err("an unknown key is refused");
    assert!(err.contains("no_such_key"), "{err}");

    // A new listener on a port something else holds.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap().port();
    let err = p
        .reload(&config(
            &format!("cluster_port: [{}, {busy}]", p.client_addr().port()),
            &[&section(
                "app.test",
                &p.backend_addr(0).to_string(),
                "default: true",
            )],
        ))
        .expect_err("a port in use is refused");
    assert!(err.contains(&busy.to_string()), "{err}");

    // Still the old config, the same backend.
    let r = get_once(p.client_addr(), "app.test", "/");
    assert_eq!(r.status, 200);
    assert_eq!(served_by(&r), farm.ids[0]);
    assert_eq!(p.log_count(" joined section "), 1);
    p.assert_alive();
}

#[test]
fn a_busy_backend_finishes_its_request_across_reloads_and_a_removed_sections_closes_after() {
    let mut p = Proxy::start(&config(
        "",
        &[
            &section("app.test", "127.0.0.1:0", ""),
            &section("old.test", "127.0.0.1:0", ""),
        ],
    ));
    let (app, old) = (p.backend_addr(0), p.backend_addr(1));
    let mut kept = Backend::connect(app, &id12("kept", 1), "");
    let mut leaving = Backend::connect(old, &id12("leaving", 1), "");
    wait_joined(&p, 2);

    let mut c1 = Client::connect(p.client_addr());
    c1.send(b"GET /one HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let mut c2 = Client::connect(p.client_addr());
    c2.send(b"GET /two HTTP/1.1\r\nHost: old.test\r\n\r\n");
    let req1 = kept.expect_request();
    let req2 = leaving.expect_request();

    // Both are busy while old.test is removed.
    p.reload(&config("", &[&section("app.test", &app.to_string(), "")]))
        .expect("reload");
    kept.respond_echo(&req1);
    leaving.respond_echo(&req2);
    let r1 = c1.read_response(false);
    let r2 = c2.read_response(false);
    assert_eq!((r1.status, r2.status), (200, 200), "{r1:?} {r2:?}");
    assert!(r1.body_contains("GET /one ") && r2.body_contains("GET /two "));

    // The kept backend is back in its pool; the other one is closed.
    c1.send(b"GET /again HTTP/1.1\r\nHost: app.test\r\n\r\n");
    let again = kept.expect_request();
    kept.respond_echo(&again);
    let r = c1.read_response(false);
    assert_eq!(served_by(&r), "kept00000001");
    assert!(
        leaving.conn.is_closed(T),
        "the removed section's backend stays open"
    );
    assert!(p.wait_for_log("its section was removed by a reload", T));
    p.assert_alive();
}

#[test]
fn three_reloads_under_load_lose_no_request() {
    reloads_under_load("");
}

#[test]
fn three_reloads_under_load_with_two_workers_lose_no_request() {
    reloads_under_load("workers: 2");
}

fn reloads_under_load(top: &str) {
    let mut p = Proxy::start(&one_section(top, "key: k0"));
    let backend = p.backend_addr(0);
    // More backends than clients: some are idle at every reload.
    let farm = EchoFarm::start(backend, "k0", 6, false);
    wait_joined(&p, 6);

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let addr = p.client_addr();
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, ok) = (stop.clone(), ok.clone());
            thread::spawn(move || -> Result<(), String> {
                let started = Instant::now();
                let mut c = Client::connect(addr);
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(30) {
                    // Half on one kept-alive connection, half on new ones.
                    let r = if i % 2 == 0 {
                        let req = format!("GET /t{t}/{i} HTTP/1.1\r\nHost: app.test\r\n\r\n");
                        c.try_send(req.as_bytes())
                            .map_err(|e| format!("client {t} request {i}: {e}"))?;
                        c.try_read_response(false)
                            .map_err(|e| format!("client {t} request {i}: {e:?}"))?
                    } else {
                        get_once(addr, "app.test", &format!("/t{t}/{i}"))
                    };
                    if r.status != 200 || !r.body_contains(&format!("GET /t{t}/{i} ")) {
                        return Err(format!("client {t} request {i}: {r:?}"));
                    }
                    ok.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
                Ok(())
            })
        })
        .collect();

    for n in 1..=3 {
        let before = ok.load(Ordering::SeqCst);
        assert!(eventually(T, || ok.load(Ordering::SeqCst) >= before + 20));
        p.reload(&config(
            top,
            &[&section(
                &format!("[app.test, reload{n}.test]"),
                &backend.to_string(),
                "default: true\nkey: k0",
            )],
        ))
        .unwrap_or_else(|e| panic!("reload {n}: {e}"));
    }
    let before = ok.load(Ordering::SeqCst);
    assert!(eventually(T, || ok.load(Ordering::SeqCst) >= before + 20));
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("{e}\n{}", p.stderr_text()));
    }
    assert!(p.log_count("SIGHUP: reloaded") == 3);
    assert_eq!(p.log_count(" joined section "), 6, "backends had to rejoin");
    assert_eq!(p.log_count(" left section "), 0, "{}", p.stderr_text());
    drop(farm);
    p.assert_alive();
}

/// A proxy with `timeout: 30` and one backend connection.
fn one_backend_waiting_30s() -> (Proxy, SocketAddr, EchoFarm) {
    let p = Proxy::start(&one_section("timeout: 30", ""));
    let backend = p.backend_addr(0);
    let farm = EchoFarm::start(backend, "", 1, false);
    wait_joined(&p, 1);
    (p, backend, farm)
}

/// Keeps the only backend busy for 3 s and queues a request behind it:
/// the client holding the backend, the queued one, and when it queued.
fn hold_and_queue(p: &Proxy, farm: &mut EchoFarm) -> (Client, Client, Instant) {
    let mut held = Client::connect(p.client_addr());
    held.send(b"GET /sleep=3000 HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert!(farm.wait_for(T, |s| s.target == "/sleep=3000"));
    let queued_at = Instant::now();
    let mut queued = Client::connect(p.client_addr());
    queued.send(b"GET /queued HTTP/1.1\r\nHost: app.test\r\n\r\n");
    (held, queued, queued_at)
}

/// Under `timeout: 1` the queued request gets its 503 about 1 s after it
/// queued (served, it would have waited 3 s); the held one is answered.
fn assert_503_after_about_1s(held: &mut Client, queued: &mut Client, queued_at: Instant) {
    let r = queued.read_response(false);
    let waited = queued_at.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "{waited:?}"
    );
    assert_eq!(held.read_response(false).status, 200);
}

#[test]
fn a_reload_gives_a_section_a_docroot_and_a_new_timeout() {
    let (mut p, backend, mut farm) = one_backend_waiting_30s();
    let site = p.dir.path.join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("hello.txt"), "hello from the docroot\n").unwrap();
    // Before: the backend answers.
    let r = get_once(p.client_addr(), "app.test", "/hello.txt");
    assert!(r.header("X-Backend").is_some(), "{r:?}");

    p.reload(&config(
        "timeout: 1",
        &[&section(
            "app.test",
            &backend.to_string(),
            &format!("default: true\ndocroot: {}", site.display()),
        )],
    ))
    .expect("reload");
    let r = get_once(p.client_addr(), "app.test", "/hello.txt");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), "hello from the docroot\n");
    assert!(r.header("X-Backend").is_none(), "{r:?}");

    // The new `timeout` applies to a request queued after the reload.
    let (mut held, mut queued, queued_at) = hold_and_queue(&p, &mut farm);
    assert_503_after_about_1s(&mut held, &mut queued, queued_at);
    p.assert_alive();
}

#[test]
fn a_lower_timeout_applies_to_requests_already_waiting() {
    let (mut p, backend, mut farm) = one_backend_waiting_30s();
    // Queued under `timeout: 30`; the reload makes it 1 s, counted from
    // when the request began waiting.
    let (mut held, mut queued, queued_at) = hold_and_queue(&p, &mut farm);
    p.reload(&config(
        "timeout: 1",
        &[&section("app.test", &backend.to_string(), "default: true")],
    ))
    .expect("reload");
    assert_503_after_about_1s(&mut held, &mut queued, queued_at);
    p.assert_alive();
}

#[test]
fn settings_that_shape_the_process_wait_for_a_restart_and_say_so() {
    let mut p = Proxy::start(&one_section("", ""));
    let backend = p.backend_addr(0);
    let _farm = EchoFarm::start(backend, "", 1, false);
    wait_joined(&p, 1);
    p.reload(&config(
        "workers: 2\nreuseport: true",
        &[&section("app.test", &backend.to_string(), "default: true")],
    ))
    .expect("the rest of the config is reloaded");
    let log = p.stderr_text();
    for key in ["workers", "reuseport"] {
        let line =
            format!("SIGHUP: `{key}` changed; it takes effect only when the proxy is restarted");
        assert!(log.contains(&line), "{line}\n{log}");
    }
    assert!(!log.contains("worker 1"), "a second worker started:\n{log}");
    assert_eq!(get_once(p.client_addr(), "app.test", "/").status, 200);
    p.assert_alive();
}
