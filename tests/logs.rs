//! Log lines: one per backend join and leave, per refused handshake, per
//! error response; `logger.log_level` sets the level and RUST_LOG overrides.

mod common;

use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Joins a backend, refuses one, leaves one, and sends a 404.
fn make_noise(p: &Proxy) -> String {
    let mut good = Backend::connect(p.backend_addr(0), &id12("logok", 1), "s3cret");
    let h = std::thread::spawn(move || {
        good.echo_one();
        // Dropping it closes the connection: the backend leaves.
    });
    let r = get_once(p.client_addr(), "app.test", "/x");
    assert_eq!(r.status, 200, "{r:?}");
    join_within(h, T, "backend");
    let mut bad = Backend::connect(p.backend_addr(0), &id12("logbad", 1), "nope!");
    assert!(bad.is_closed(T), "wrong key was kept");
    let r = get_once(p.client_addr(), "nowhere.test", "/missing");
    assert_eq!(r.status, 404, "{r:?}");
    id12("logok", 1)
}

#[test]
fn info_level_logs_joins_leaves_refusals_and_errors() {
    let p = Proxy::start(&config(
        "logger:\n  log_level: 2",
        &["incoming: app.test\noutgoing: 127.0.0.1:0\nkey: s3cret"],
    ));
    let id = make_noise(&p);
    assert!(
        p.wait_for_log(&format!("backend {id} joined section app.test"), T),
        "{}",
        p.stderr_text()
    );
    assert!(
        p.wait_for_log(&format!("backend {id} left section app.test"), T),
        "{}",
        p.stderr_text()
    );
    assert!(
        p.wait_for_log("refused a backend handshake", T),
        "{}",
        p.stderr_text()
    );
    assert!(
        p.wait_for_log("404: no section serves host", T),
        "{}",
        p.stderr_text()
    );
}

#[test]
fn level_zero_is_quiet_and_rust_log_overrides_it() {
    let yaml = config(
        "logger:\n  log_level: 0",
        &["incoming: app.test\noutgoing: 127.0.0.1:0\nkey: s3cret"],
    );
    let p = Proxy::start(&yaml);
    make_noise(&p);
    let text = p.stderr_text();
    assert!(!text.contains("joined section"), "{text}");
    assert!(!text.contains("404"), "{text}");

    let p = Proxy::start_with_env(&yaml, &[("RUST_LOG", "info")]);
    make_noise(&p);
    assert!(
        p.wait_for_log("joined section app.test", T),
        "{}",
        p.stderr_text()
    );
    assert!(
        p.wait_for_log("404: no section serves host", T),
        "{}",
        p.stderr_text()
    );
}
