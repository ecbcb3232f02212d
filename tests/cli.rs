//! Command line and configuration errors (docs/configuration.md).

mod common;

use common::*;
use std::net::TcpListener;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn check(yaml: &str) -> (CliOutput, TempDir) {
    let dir = TempDir::new("cli");
    let path = dir.write("config.yml", yaml);
    let out = run_cli(&[std::ffi::OsStr::new("--check"), path.as_os_str()], T);
    (out, dir)
}

fn run(yaml: &str) -> (CliOutput, TempDir) {
    let dir = TempDir::new("cli");
    let path = dir.write("config.yml", yaml);
    let out = run_cli(&[path.as_os_str()], T);
    (out, dir)
}

/// Both `--check` and a real start refuse `yaml`, naming `key` (and each
/// of `also`) on stderr.
fn refused(yaml: &str, key: &str, also: &[&str]) {
    for (mode, (out, _d)) in [("--check", check(yaml)), ("run", run(yaml))] {
        assert!(
            !out.success() && out.code.is_some(),
            "{mode}: bad config accepted:\n{yaml}\n{out:?}"
        );
        assert!(
            out.stderr.contains(key),
            "{mode}: error does not name `{key}`:\n{yaml}\n{out:?}"
        );
        for a in also {
            assert!(
                out.stderr.contains(a),
                "{mode}: error does not mention `{a}`:\n{yaml}\n{out:?}"
            );
        }
    }
}

fn good() -> String {
    one_section("", "")
}

#[test]
fn check_accepts_a_good_config() {
    let (out, _d) = check(&config(
        "timeout: 2.5\nheader_timeout: 5\nkeepalive_timeout: 10\nbackend_timeout: 30\nmax_header_bytes: 8192\nmax_body_bytes: 1000000",
        &[
            "incoming: [app.test, www.app.test]\noutgoing: 127.0.0.1:0\ndefault: true\nkey: s3cret\nxforwardedfor: true\nredeployable: true\nredeployment_sizelimit: 4096",
            "incoming: other.test\noutgoing: [127.0.0.1:0, 127.0.0.1:0]",
        ],
    ));
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout.contains("app.test"),
        "--check should print the normalized config: {out:?}"
    );
    assert!(out.stdout.contains("other.test"), "{out:?}");
}

#[test]
fn check_accepts_the_classic_example() {
    // The classic example config (ports changed to 0, docroot to an existing dir).
    let (out, _d) = check(
        "cluster_address: 127.0.0.1\n\
         cluster_port: 0\n\
         map:\n  \
           - incoming: [example.com, www.example.com]\n    \
             outgoing: 127.0.0.1:0\n    \
             default: true\n    \
             docroot: .\n    \
             redeployable: true\n  \
           - incoming: api.example.com\n    \
             outgoing: 127.0.0.1:0\n    \
             key: s3cret\n",
    );
    assert!(out.success(), "{out:?}");
}

#[test]
fn legacy_keys_are_accepted() {
    let (out, _d) = check(&config(
        "epoll: true\ndescriptors: 20000\nchunked_encoding_threshold: 16384",
        &["incoming: a.test\noutgoing: 127.0.0.1:0"],
    ));
    assert!(
        out.success(),
        "legacy keys must be accepted and ignored: {out:?}"
    );
}

#[test]
fn bad_timeout_names_the_key() {
    refused(&one_section("timeout: soon", ""), "timeout", &[]);
}

#[test]
fn negative_timeout_names_the_key() {
    refused(&one_section("timeout: -1", ""), "timeout", &[]);
}

#[test]
fn bad_cluster_port_names_the_key() {
    refused(&one_section("cluster_port: 70000", ""), "cluster_port", &[]);
}

#[test]
fn bad_outgoing_names_the_key() {
    refused(
        &config("", &["incoming: a.test\noutgoing: not-an-address"]),
        "outgoing",
        &[],
    );
}

#[test]
fn missing_outgoing_names_the_key() {
    refused(
        &config("", &["incoming: a.test\ndefault: true"]),
        "outgoing",
        &[],
    );
}

#[test]
fn bad_redeployment_sizelimit_names_the_key() {
    refused(
        &one_section("", "redeployment_sizelimit: lots"),
        "redeployment_sizelimit",
        &[],
    );
}

#[test]
fn bad_max_header_bytes_names_the_key() {
    refused(
        &one_section("max_header_bytes: many", ""),
        "max_header_bytes",
        &[],
    );
}

#[test]
fn bad_max_body_bytes_names_the_key() {
    refused(
        &one_section("max_body_bytes: -5", ""),
        "max_body_bytes",
        &[],
    );
}

#[test]
fn bad_log_level_names_the_key() {
    refused(
        &one_section("logger:\n  log_level: 9", ""),
        "log_level",
        &[],
    );
}

#[test]
fn bad_boolean_names_the_key() {
    refused(
        &one_section("", "redeployable: perhaps"),
        "redeployable",
        &[],
    );
}

#[test]
fn unknown_top_level_key_names_key_and_line() {
    let yaml = "cluster_address: 127.0.0.1\n\
                cluster_port: 0\n\
                timeout: 1\n\
                bogus_option: 7\n\
                map:\n  \
                  - incoming: a.test\n    \
                    outgoing: 127.0.0.1:0\n";
    refused(yaml, "bogus_option", &["line 4"]);
}

#[test]
fn unknown_section_key_names_key_and_line() {
    let yaml = "cluster_address: 127.0.0.1\n\
                cluster_port: 0\n\
                map:\n  \
                  - incoming: a.test\n    \
                    outgoing: 127.0.0.1:0\n  \
                  - incoming: b.test\n    \
                    outgoing: 127.0.0.1:0\n    \
                    redeploy: true\n";
    refused(yaml, "redeploy", &["line 8"]);
}

#[test]
fn invalid_yaml_is_refused() {
    let (out, _d) = check("cluster_port: [0\nmap: {\n");
    assert!(!out.success() && out.code.is_some(), "{out:?}");
    assert!(!out.stderr.trim().is_empty(), "no error message: {out:?}");
}

#[test]
fn missing_config_file_is_refused() {
    let dir = TempDir::new("cli");
    let path = dir.path.join("does-not-exist.yml");
    for args in [
        vec![std::ffi::OsStr::new("--check"), path.as_os_str()],
        vec![path.as_os_str()],
    ] {
        let out = run_cli(&args, T);
        assert!(!out.success() && out.code.is_some(), "{out:?}");
        assert!(
            out.stderr.contains("does-not-exist.yml"),
            "error should name the file: {out:?}"
        );
    }
}

#[test]
fn client_port_in_use_names_the_address() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (out, _d) = run(&one_section(&format!("cluster_port: {port}"), ""));
    assert!(!out.success() && out.code.is_some(), "{out:?}");
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "error should name the address: {out:?}"
    );
    assert!(
        out.stderr.to_lowercase().contains("in use"),
        "error should give the OS reason: {out:?}"
    );
    drop(l);
}

#[test]
fn backend_port_in_use_names_the_address() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (out, _d) = run(&config(
        "",
        &[&format!("incoming: a.test\noutgoing: 127.0.0.1:{port}")],
    ));
    assert!(!out.success() && out.code.is_some(), "{out:?}");
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "error should name the address: {out:?}"
    );
    assert!(
        out.stderr.to_lowercase().contains("in use"),
        "error should give the OS reason: {out:?}"
    );
    drop(l);
}

#[test]
fn good_config_starts_and_reports_listeners() {
    let p = Proxy::start(&good());
    assert_eq!(p.client_addrs().len(), 1);
    assert_eq!(p.backend_addrs(0).len(), 1);
    assert_ne!(p.client_addr().port(), 0);
    assert_ne!(p.backend_addr(0).port(), 0);
    let text = p.stderr_text();
    let lines: Vec<&str> = text.lines().collect();
    let ci = lines
        .iter()
        .position(|l| l.contains("swiftiply: clients listening on"))
        .unwrap();
    let si = lines
        .iter()
        .position(|l| l.contains("swiftiply: section 0 backends listening on"))
        .unwrap();
    let ri = lines
        .iter()
        .position(|l| l.contains("swiftiply: ready"))
        .unwrap();
    assert!(ci < si && si < ri, "listening lines out of order:\n{text}");
}

#[test]
fn quiet_log_level_still_prints_ready_lines() {
    let p = Proxy::start(&one_section("logger:\n  log_level: 0", ""));
    assert!(p.stderr_text().contains("swiftiply: ready"));
}

#[test]
fn version_flag() {
    let out = run_cli(&["--version"], T);
    assert!(out.success(), "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains(env!("CARGO_PKG_VERSION")),
        "--version should print the version: {out:?}"
    );
}

#[test]
fn help_flag() {
    let out = run_cli(&["--help"], T);
    assert!(out.success(), "{out:?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(
        all.contains("--check"),
        "--help should mention --check: {out:?}"
    );
}

#[test]
fn unknown_flag_is_refused() {
    let out = run_cli(&["--no-such-flag"], T);
    assert!(!out.success() && out.code.is_some(), "{out:?}");
}

#[test]
fn dash_c_runs_the_config() {
    let p = Proxy::start_dash_c(&good());
    assert_ne!(p.client_addr().port(), 0);
    let r = get_once(p.client_addr(), "app.test", "/swiftiply_health");
    assert_eq!(r.status, 200, "{r:?}");
}

/// With no argument the proxy runs on the built-in default: clients on
/// 127.0.0.1:8080, one default section whose backends dial 127.0.0.1:30000.
/// If another program holds one of those ports here, the proxy must say so.
#[test]
fn no_argument_runs_the_builtin_default() {
    match Proxy::try_start_builtin_default() {
        Ok(p) => {
            let text = p.stderr_text();
            assert!(text.contains("built-in default"), "{text}");
            assert_eq!(p.client_addr(), "127.0.0.1:8080".parse().unwrap());
            assert_eq!(p.backend_addr(0), "127.0.0.1:30000".parse().unwrap());
            let farm = EchoFarm::start(p.backend_addr(0), "", 1, false);
            let r = get_once(p.client_addr(), "anything.test", "/default");
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(r.header("x-backend"), Some(farm.ids[0].as_str()));
        }
        Err(e) => assert!(
            e.contains("127.0.0.1:8080") || e.contains("127.0.0.1:30000"),
            "the default failed to start without naming the busy address:\n{e}"
        ),
    }
}

/// Settings this version cannot honour must not be silently ignored: TLS
/// stops the start with a clear message. (Daemon mode and dropping
/// privileges are supported: tests/daemon.rs.)
#[test]
fn unsupported_settings_stop_the_start() {
    let ssl =
        "ssl:\n  - at: 127.0.0.1:0\n    certfile: /nonexistent.crt\n    keyfile: /nonexistent.key";
    let (out, _dir) = run(&one_section(ssl, ""));
    assert!(!out.success(), "{out:?}");
    assert!(out.stderr.contains("ssl"), "{out:?}");
    assert!(out.stderr.contains("not supported"), "{out:?}");
}
