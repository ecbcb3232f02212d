//! End-to-end tests over `Config::from_yaml_str` and `Config::load`: each
//! feeds a whole config text and checks the `Config` or the error message a
//! person would see.

use super::*;

fn load(text: &str) -> Config {
    match Config::from_yaml_str(text, "test.yml") {
        Ok(c) => c,
        Err(e) => panic!("config did not load: {e}"),
    }
}

fn load_err(text: &str) -> String {
    match Config::from_yaml_str(text, "test.yml") {
        Ok(c) => panic!("config loaded but should not have: {c:#?}"),
        Err(e) => {
            assert!(e.0.starts_with("test.yml: "), "no origin prefix: {e}");
            e.0
        }
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const MINIMAL: &str = "\
cluster_address: 127.0.0.1
cluster_port: 8080
map:
  - incoming: example.com
    outgoing: 127.0.0.1:30000
";

/// The example of reference §1.5 (with its legacy keys).
const CLASSIC: &str = r#"
cluster_address: [0.0.0.0]
cluster_port: [80, 443]
daemonize: true
pidfile: /var/run/swiftiply.pid          # W only
user: nobody
group: nogroup
epoll: true
epoll_descriptors: 8192
chunked_encoding_threshold: 16384
cache_threshold: 102400
health_check_uri: /swiftiply_health      # W only
ssl:
  - at: 0.0.0.0:443
    certfile: /etc/ssl/site.crt
    keyfile: /etc/ssl/site.key
logger: {type: stderror, log_level: 1}
defaults:
  redeployable: true
  redeployment_sizelimit: 16384
map:
  - incoming: [example.com, www.example.com]
    outgoing: 127.0.0.1:30000          # backends connect here
    default: true
    docroot: /srv/example/public
    sendfileroot: /srv/example/private
    enable_sendfile_404: true
    xforwardedfor: true
    key: s3cret
    staticmask: \.(rb|yml)$
    cache_directory: public
    cache_extensions: [html, htm]
    file_cache: {size: 500, window: 60}
  - incoming: api.example.com
    outgoing: [127.0.0.1:30010, 127.0.0.1:30011]
"#;

#[test]
fn classic_example_loads() {
    let c = load(CLASSIC);
    assert_eq!(c.cluster_address, vec!["0.0.0.0"]);
    assert_eq!(c.cluster_port, vec![80, 443]);
    assert!(c.daemonize);
    assert_eq!(c.pidfile, Some(PathBuf::from("/var/run/swiftiply.pid")));
    assert_eq!(c.user.as_deref(), Some("nobody"));
    assert_eq!(c.group.as_deref(), Some("nogroup"));
    assert_eq!(c.health_check_uri, "/swiftiply_health");
    assert_eq!(
        c.ssl,
        vec![SslListener {
            at: "0.0.0.0:443".into(),
            certfile: "/etc/ssl/site.crt".into(),
            keyfile: "/etc/ssl/site.key".into(),
        }]
    );
    assert_eq!(c.log_level, 1);
    assert_eq!(c.timeout, Duration::from_secs(3));
    assert_eq!(c.sections.len(), 2);
    let s0 = &c.sections[0];
    assert_eq!(s0.incoming, vec!["example.com", "www.example.com"]);
    assert_eq!(s0.outgoing, vec![sa("127.0.0.1:30000")]);
    assert!(s0.default && s0.enable_sendfile_404 && s0.xforwardedfor && s0.redeployable);
    assert_eq!(s0.key, "s3cret");
    assert_eq!(s0.docroot, Some(PathBuf::from("/srv/example/public")));
    assert_eq!(s0.sendfileroot, Some(PathBuf::from("/srv/example/private")));
    assert_eq!(s0.staticmask.as_deref(), Some(r"\.(rb|yml)$"));
    assert_eq!(s0.cache_directory.as_deref(), Some("public"));
    assert_eq!(s0.cache_extensions, vec!["html", "htm"]);
    let s1 = &c.sections[1];
    assert_eq!(s1.incoming, vec!["api.example.com"]);
    assert_eq!(
        s1.outgoing,
        vec![sa("127.0.0.1:30010"), sa("127.0.0.1:30011")]
    );
    assert!(!s1.default && s1.redeployable && !s1.xforwardedfor);
    assert_eq!(s1.key, "");
    assert_eq!(s1.redeployment_sizelimit, 16384);
    assert_eq!(s1.cache_extensions, vec!["html"]);
    assert_eq!(
        c.client_addrs().unwrap(),
        vec![sa("0.0.0.0:80"), sa("0.0.0.0:443")]
    );
}

#[test]
fn minimal_defaults() {
    let c = load(MINIMAL);
    assert_eq!(c.timeout, Duration::from_secs(3));
    assert_eq!(c.header_timeout, Duration::from_secs(10));
    assert_eq!(c.keepalive_timeout, Duration::from_secs(30));
    assert_eq!(c.backend_timeout, Duration::from_secs(60));
    assert_eq!(c.handshake_timeout, Duration::from_secs(5));
    assert_eq!(c.max_header_bytes, 16384);
    assert_eq!(c.max_body_bytes, None);
    assert_eq!(c.log_level, 2);
    assert_eq!(c.health_check_uri, "/swiftiply_health");
    assert!(!c.daemonize && c.ssl.is_empty());
    let s = &c.sections[0];
    assert!(!s.default && !s.redeployable && !s.xforwardedfor && !s.enable_sendfile_404);
    assert_eq!(s.redeployment_sizelimit, 16384);
    assert_eq!(s.cache_extensions, vec!["html"]);
    assert_eq!(s.key, "");
}

#[test]
fn example_yml_loads() {
    let c = load(include_str!("../../config/example.yml"));
    assert_eq!(c.sections.len(), 3);
    assert_eq!(c.max_body_bytes, Some(104_857_600));
    assert!(c.sections[0].redeployable);
    assert!(!c.sections[1].redeployable, "own value must beat defaults");
    assert_eq!(c.sections[1].key, "1234");
    assert!(c.sections[2].outgoing.is_empty());
    assert_eq!(Config::from_yaml_str(&c.to_yaml(), "x").unwrap(), c);
}

#[test]
fn minimal_yml_loads() {
    let c = load(include_str!("../../config/minimal.yml"));
    assert!(c.sections[0].default);
}

#[test]
fn string_or_list_forms() {
    let a = load(
        "cluster_address: 127.0.0.1\ncluster_port: 8080\nmap:\n  - incoming: a.com\n    outgoing: 127.0.0.1:1\n    cache_extensions: htm\n",
    );
    let b = load(
        "cluster_address: [127.0.0.1]\ncluster_port: [8080]\nmap:\n  - incoming: [a.com]\n    outgoing: [127.0.0.1:1]\n    cache_extensions: [htm]\n",
    );
    assert_eq!(a, b);
    let c = load(
        "cluster_address:\n  - 127.0.0.1\n  - 127.0.0.2\ncluster_port: [8080, '8081', 0]\nmap:\n  - incoming:\n      - A.Example.COM\n      - b.example.com\n    outgoing:\n      - 127.0.0.1:1\n      - 127.0.0.1:0\n      - 127.0.0.1:0\n",
    );
    assert_eq!(c.cluster_address, vec!["127.0.0.1", "127.0.0.2"]);
    assert_eq!(c.cluster_port, vec![8080, 8081, 0]);
    assert_eq!(
        c.sections[0].incoming,
        vec!["a.example.com", "b.example.com"]
    );
    assert_eq!(c.sections[0].outgoing.len(), 3);
    assert_eq!(c.client_addrs().unwrap().len(), 6);
}

#[test]
fn defaults_merge_section_wins() {
    let c = load(
        "cluster_address: 127.0.0.1
cluster_port: 8080
defaults:
  key: dkey
  xforwardedfor: true
  redeployment_sizelimit: 1000
  cache_extensions: [htm]
  docroot: /srv/d
map:
  - incoming: a.com
    outgoing: 127.0.0.1:1
    key: own
    xforwardedfor: false
  - incoming: b.com
    outgoing: 127.0.0.1:2
    redeployment_sizelimit: 2000
",
    );
    let (a, b) = (&c.sections[0], &c.sections[1]);
    assert_eq!(a.key, "own");
    assert!(!a.xforwardedfor);
    assert_eq!(a.redeployment_sizelimit, 1000);
    assert_eq!(b.key, "dkey");
    assert!(b.xforwardedfor);
    assert_eq!(b.redeployment_sizelimit, 2000);
    assert_eq!(a.cache_extensions, vec!["htm"]);
    assert_eq!(b.docroot, Some(PathBuf::from("/srv/d")));
}

#[test]
fn yaml_merge_keys_work() {
    let c = load(
        "cluster_address: 127.0.0.1
cluster_port: 8080
map:
  - &first
    incoming: a.com
    outgoing: 127.0.0.1:1
    redeployable: true
    key: shared
  - <<: *first
    incoming: b.com
    outgoing: 127.0.0.1:2
",
    );
    assert_eq!(c.sections[1].incoming, vec!["b.com"]);
    assert!(c.sections[1].redeployable);
    assert_eq!(c.sections[1].key, "shared");
}

#[test]
fn booleans_accept_strings() {
    let c = load(
        "cluster_address: 127.0.0.1
cluster_port: 8080
daemonize: 'no'
map:
  - incoming: a.com
    outgoing: 127.0.0.1:1
    redeployable: 'true'
    xforwardedfor: yes
    enable_sendfile_404: On
    default: 'false'
",
    );
    assert!(!c.daemonize);
    let s = &c.sections[0];
    assert!(s.redeployable && s.xforwardedfor && s.enable_sendfile_404 && !s.default);
    let e = load_err(&MINIMAL.replace("example.com\n", "example.com\n    redeployable: maybe\n"));
    assert!(e.contains("maybe") && e.contains("line"), "{e}");
}

#[test]
fn unknown_top_level_key() {
    let e = load_err(&format!("foo: 1\n{MINIMAL}"));
    assert!(e.contains("unknown key `foo`"), "{e}");
    assert!(e.contains("line 1 column 1"), "{e}");
    assert!(e.contains("expected one of"), "{e}");
    let e = load_err(&format!("{MINIMAL}bogus_key: 3\n"));
    assert!(e.contains("`bogus_key`") && e.contains("line 6"), "{e}");
    let e = load_err(&format!("{MINIMAL}incoming: x\n"));
    assert!(e.contains("section key"), "{e}");
}

#[test]
fn unknown_section_key() {
    let e = load_err(&format!("{MINIMAL}    static_mask: foo\n"));
    assert!(e.contains("unknown key `static_mask`"), "{e}");
    assert!(e.contains("map[0]"), "{e}");
    assert!(e.contains("line 6"), "{e}");
    assert!(e.contains("staticmask"), "{e}");
    let e = load_err(&format!("{MINIMAL}defaults:\n  nope: 1\n"));
    assert!(
        e.contains("defaults") && e.contains("`nope`") && e.contains("line 7"),
        "{e}"
    );
}

#[test]
fn bad_types() {
    let e = load_err(&MINIMAL.replace("cluster_port: 8080", "cluster_port: {a: 1}"));
    assert!(e.contains("cluster_port") && e.contains("line 2"), "{e}");
    let e = load_err(&MINIMAL.replace("cluster_port: 8080", "cluster_port: 70000"));
    assert!(e.contains("70000") && e.contains("out of range"), "{e}");
    let e = load_err(&format!("{MINIMAL}timeout: soon\n"));
    assert!(e.contains("timeout") && e.contains("seconds"), "{e}");
    let e = load_err(&format!("{MINIMAL}max_header_bytes: -5\n"));
    assert!(e.contains("max_header_bytes"), "{e}");
    let e = load_err("- a\n- b\n");
    assert!(e.contains("mapping"), "{e}");
    let e = load_err(&MINIMAL.replace("outgoing: 127.0.0.1:30000", "outgoing: nowhere"));
    assert!(e.contains("outgoing") && e.contains("host:port"), "{e}");
}

#[test]
fn duplicate_default() {
    let e = load_err(
        "cluster_address: 127.0.0.1
cluster_port: 8080
map:
  - incoming: a.com
    outgoing: 127.0.0.1:1
    default: true
  - incoming: b.com
    outgoing: 127.0.0.1:2
    default: true
",
    );
    assert!(
        e.contains("map[0] (a.com)") && e.contains("map[1] (b.com)"),
        "{e}"
    );
    assert!(e.contains("default"), "{e}");
}

#[test]
fn duplicate_incoming() {
    let e = load_err(
        "cluster_address: 127.0.0.1
cluster_port: 8080
map:
  - incoming: a.com
    outgoing: 127.0.0.1:1
  - incoming: [b.com, A.com]
    outgoing: 127.0.0.1:2
",
    );
    assert!(
        e.contains("`a.com`") && e.contains("map[0]") && e.contains("map[1]"),
        "{e}"
    );
}

#[test]
fn duplicate_outgoing() {
    let e = load_err(
        "cluster_address: 127.0.0.1
cluster_port: 8080
map:
  - incoming: a.com
    outgoing: 127.0.0.1:1
  - incoming: b.com
    outgoing: 127.0.0.1:1
",
    );
    assert!(
        e.contains("127.0.0.1:1") && e.contains("map[1] (b.com)"),
        "{e}"
    );
    let e = load_err(&MINIMAL.replace("127.0.0.1:30000", "[127.0.0.1:5, 127.0.0.1:5]"));
    assert!(e.contains("listed twice"), "{e}");
    // Port 0 (any free port) may repeat.
    load(&MINIMAL.replace("127.0.0.1:30000", "[127.0.0.1:0, 127.0.0.1:0]"));
    // An outgoing address may not be a client listener.
    let e = load_err(&MINIMAL.replace("127.0.0.1:30000", "127.0.0.1:8080"));
    assert!(e.contains("client listener"), "{e}");
}

#[test]
fn key_rules() {
    let long = "k".repeat(256);
    let e = load_err(&format!("{MINIMAL}    key: {long}\n"));
    assert!(
        e.contains("key") && e.contains("255") && e.contains("map[0]"),
        "{e}"
    );
    let ok = load(&format!("{MINIMAL}    key: {}\n", "k".repeat(255)));
    assert_eq!(ok.sections[0].key.len(), 255);
    let c = load(&format!("{MINIMAL}    key: 1234\n"));
    assert_eq!(c.sections[0].key, "1234");
    let c = load(&format!("{MINIMAL}    key: 0012\n"));
    assert_eq!(c.sections[0].key, "0012");
}

#[test]
fn redeployment_sizelimit_too_large() {
    let e = load_err(&format!("{MINIMAL}    redeployment_sizelimit: 1048577\n"));
    assert!(
        e.contains("redeployment_sizelimit") && e.contains("1048576"),
        "{e}"
    );
    assert!(e.contains("buffer"), "{e}");
    let c = load(&format!("{MINIMAL}    redeployment_sizelimit: 1048576\n"));
    assert_eq!(c.sections[0].redeployment_sizelimit, 1_048_576);
}

#[test]
fn required_keys() {
    let e = load_err(&MINIMAL.replace("cluster_port: 8080\n", ""));
    assert!(
        e.contains("cluster_port is required: the port(s) clients connect to"),
        "{e}"
    );
    let e = load_err(&MINIMAL.replace("cluster_address: 127.0.0.1\n", ""));
    assert!(e.contains("cluster_address is required"), "{e}");
    let e = load_err("cluster_address: 127.0.0.1\ncluster_port: 8080\n");
    assert!(e.contains("map: no sections"), "{e}");
    let e = load_err("cluster_address: 127.0.0.1\ncluster_port: 8080\nmap: []\n");
    assert!(e.contains("map: no sections"), "{e}");
    let e = load_err(&MINIMAL.replace("    outgoing: 127.0.0.1:30000\n", ""));
    assert!(
        e.contains("`outgoing` is missing") && e.contains("map[0] (example.com)"),
        "{e}"
    );
    let e = load_err(&MINIMAL.replace("  - incoming: example.com\n    outgoing", "  - outgoing"));
    assert!(e.contains("`incoming` is missing"), "{e}");
    // docroot makes outgoing optional.
    let c = load(&MINIMAL.replace("outgoing: 127.0.0.1:30000", "docroot: /srv/x"));
    assert!(c.sections[0].outgoing.is_empty());
}

#[test]
fn empty_file() {
    let e = load_err("");
    assert!(e.contains("empty"), "{e}");
    let e = load_err("# only a comment\n\n");
    assert!(e.contains("empty"), "{e}");
    let e = load_err("---\n");
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn durations() {
    let c = load(&format!(
        "{MINIMAL}timeout: 2.5\nheader_timeout: 0.25\nkeepalive_timeout: 1\nbackend_timeout: 120\nhandshake_timeout: 0.001\n"
    ));
    assert_eq!(c.timeout, Duration::from_millis(2500));
    assert_eq!(c.header_timeout, Duration::from_millis(250));
    assert_eq!(c.keepalive_timeout, Duration::from_secs(1));
    assert_eq!(c.backend_timeout, Duration::from_secs(120));
    assert_eq!(c.handshake_timeout, Duration::from_millis(1));
    for bad in ["0", "0.0", "-1", "-0.5", ".nan", ".inf", "1e12"] {
        let e = load_err(&format!("{MINIMAL}timeout: {bad}\n"));
        assert!(e.contains("timeout") && e.contains("line 6"), "{bad}: {e}");
    }
}

#[test]
fn log_levels() {
    let lvl = |v: &str| {
        load(&format!(
            "{MINIMAL}logger: {{type: stderror, log_level: {v}}}\n"
        ))
        .log_level
    };
    assert_eq!(lvl("0"), 0);
    assert_eq!(lvl("3"), 3);
    assert_eq!(lvl("disabled"), 0);
    assert_eq!(lvl("minimal"), 1);
    assert_eq!(lvl("normal"), 2);
    assert_eq!(lvl("full"), 3);
    assert_eq!(lvl("Full"), 3);
    assert_eq!(lvl("'level 2'"), 2);
    assert_eq!(lvl("chatty"), 1);
    let e = load_err(&format!("{MINIMAL}logger: {{log_level: 7}}\n"));
    assert!(e.contains("log_level") && e.contains('7'), "{e}");
    // `level` is the classic alias.
    let c = load(&format!("{MINIMAL}logger: {{type: stderr, level: full}}\n"));
    assert_eq!(c.log_level, 3);
    // A logger without a level, or another type: default level.
    let c = load(&format!(
        "{MINIMAL}logger: {{type: Analogger, host: 127.0.0.1, port: 6766}}\n"
    ));
    assert_eq!(c.log_level, 2);
    // defaults.logger is used only when there is no top-level logger.
    let c = load(&format!("{MINIMAL}defaults:\n  logger: {{log_level: 0}}\n"));
    assert_eq!(c.log_level, 0);
    let c = load(&format!(
        "{MINIMAL}defaults:\n  logger: {{log_level: 0}}\nlogger: {{log_level: 3}}\n"
    ));
    assert_eq!(c.log_level, 3);
}

#[test]
fn incoming_names_checked() {
    for bad in ["'a.com:80'", "'a b.com'", "http://a.com", "''"] {
        let e = load_err(&MINIMAL.replace("incoming: example.com", &format!("incoming: {bad}")));
        assert!(e.contains("incoming") && e.contains("map[0]"), "{bad}: {e}");
    }
    let c = load(&MINIMAL.replace("incoming: example.com", "incoming: '[::1]'"));
    assert_eq!(c.sections[0].incoming, vec!["[::1]"]);
}

#[test]
fn outgoing_forms() {
    let c = load(&MINIMAL.replace("127.0.0.1:30000", "localhost:30001"));
    assert_eq!(c.sections[0].outgoing, vec![sa("127.0.0.1:30001")]);
    let c = load(&MINIMAL.replace("127.0.0.1:30000", "'[::1]:30002'"));
    assert_eq!(c.sections[0].outgoing, vec![sa("[::1]:30002")]);
}

#[test]
fn legacy_section_keys() {
    let c = load(&format!(
        "{MINIMAL}    keepalive: true\n    proxy: keepalive\n    etag_cache: {{size: 1}}\n    dynamic_request_cache: {{}}\n    logger: {{type: stderror}}\n    url: ~\n"
    ));
    assert_eq!(c.sections.len(), 1);
    let e = load_err(&format!("{MINIMAL}    proxy: traditional\n"));
    assert!(
        e.contains("traditional") && e.contains("not supported"),
        "{e}"
    );
    let e = load_err(&format!("{MINIMAL}    keepalive: false\n"));
    assert!(e.contains("traditional") && e.contains("map[0]"), "{e}");
    let c = load(&format!(
        "{MINIMAL}backend_address: 127.0.0.1\nbackend_port: 3000\nkqueue: false\ndescriptors: 10\nupdates: {{updater: rest}}\n"
    ));
    assert_eq!(c.sections.len(), 1);
}

#[test]
fn operations_keys_are_checked() {
    let c = load(MINIMAL);
    assert_eq!(
        (c.access_log.as_deref(), c.status_uri.as_deref()),
        (None, None)
    );
    assert_eq!(c.shutdown_timeout, std::time::Duration::from_secs(30));
    let c = load(&format!(
        "{MINIMAL}access_log: stderr\nstatus_uri: /status\nshutdown_timeout: 2.5\n"
    ));
    assert_eq!(c.access_log.as_deref(), Some("stderr"));
    assert_eq!(c.status_uri.as_deref(), Some("/status"));
    assert_eq!(c.shutdown_timeout, std::time::Duration::from_millis(2500));
    for bad in ["status", "/a b", "/s?x=1"] {
        let e = load_err(&format!("{MINIMAL}status_uri: \"{bad}\"\n"));
        assert!(e.contains("status_uri") && e.contains("'/'"), "{bad}: {e}");
    }
    let e = load_err(&format!("{MINIMAL}status_uri: /swiftiply_health\n"));
    assert!(e.contains("health_check_uri"), "{e}");
    let e = load_err(&format!("{MINIMAL}access_log: \"\"\n"));
    assert!(e.contains("access_log") && e.contains("stderr"), "{e}");
    let e = load_err(&format!("{MINIMAL}shutdown_timeout: 0\n"));
    assert!(e.contains("shutdown_timeout"), "{e}");
}

#[test]
fn top_level_checks() {
    let e = load_err(&format!("{MINIMAL}health_check_uri: health\n"));
    assert!(e.contains("health_check_uri") && e.contains('/'), "{e}");
    for (v, ok) in [
        ("1023", false),
        ("1024", true),
        ("1048576", true),
        ("1048577", false),
    ] {
        let text = format!("{MINIMAL}max_header_bytes: {v}\n");
        match Config::from_yaml_str(&text, "t") {
            Ok(c) => assert!(ok && c.max_header_bytes == v.parse::<usize>().unwrap()),
            Err(e) => assert!(!ok && e.0.contains("max_header_bytes"), "{v}: {e}"),
        }
    }
    let c = load(&format!("{MINIMAL}max_body_bytes: 1000\n"));
    assert_eq!(c.max_body_bytes, Some(1000));
    let e = load_err(&format!(
        "{MINIMAL}ssl:\n  - at: 127.0.0.1:9443\n    certfile: a\n    keyfile: b\n"
    ));
    assert!(e.contains("ssl[0]") && e.contains("listener"), "{e}");
    let e = load_err(&format!(
        "{MINIMAL}ssl:\n  - at: 127.0.0.1:8080\n    certfile: a\n"
    ));
    assert!(e.contains("keyfile"), "{e}");
    let e = load_err(&MINIMAL.replace("cluster_port: 8080", "cluster_port: [8080, 8080]"));
    assert!(e.contains("twice"), "{e}");
    let e = load_err(&format!("{MINIMAL}timeout: 1\ntimeout: 2\n"));
    assert!(e.contains("timeout"), "{e}");
}

#[test]
fn to_yaml_round_trips() {
    for text in [CLASSIC, MINIMAL, include_str!("../../config/example.yml")] {
        let c = load(text);
        let y = c.to_yaml();
        let back = Config::from_yaml_str(&y, "x").unwrap_or_else(|e| panic!("{e}\n{y}"));
        assert_eq!(back, c, "{y}");
    }
    let c = load(&format!(
        "{MINIMAL}    key: '007'\ntimeout: 2.5\nheader_timeout: 0.1\nbackend_timeout: 0.000001\nmax_body_bytes: 0\n"
    ));
    let y = c.to_yaml();
    assert!(y.contains("timeout: 2.5"), "{y}");
    assert!(y.contains("cluster_port:"), "{y}");
    assert_eq!(Config::from_yaml_str(&y, "x").unwrap(), c, "{y}");
}

#[test]
fn builtin_default_is_valid() {
    let d = Config::builtin_default();
    d.validate().unwrap();
    assert_eq!(Config::from_yaml_str(&d.to_yaml(), "builtin").unwrap(), d);
    // Its values are the documented defaults.
    let m = load(MINIMAL);
    assert_eq!(d.timeout, m.timeout);
    assert_eq!(d.header_timeout, m.header_timeout);
    assert_eq!(d.keepalive_timeout, m.keepalive_timeout);
    assert_eq!(d.backend_timeout, m.backend_timeout);
    assert_eq!(d.handshake_timeout, m.handshake_timeout);
    assert_eq!(d.max_header_bytes, m.max_header_bytes);
    assert_eq!(d.log_level, m.log_level);
    assert_eq!(d.health_check_uri, m.health_check_uri);
    assert_eq!(
        d.sections[0].redeployment_sizelimit,
        m.sections[0].redeployment_sizelimit
    );
    assert_eq!(
        d.sections[0].cache_extensions,
        m.sections[0].cache_extensions
    );
}

#[test]
fn load_from_file() {
    let dir = std::env::temp_dir().join(format!("swiftiply-cfg-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("s.yml");
    std::fs::write(&p, MINIMAL).unwrap();
    assert_eq!(Config::load(&p).unwrap(), load(MINIMAL));
    std::fs::write(&p, "cluster_address: 127.0.0.1\nwhat: 1\n").unwrap();
    let e = Config::load(&p).unwrap_err().0;
    assert!(
        e.starts_with(&p.display().to_string()) && e.contains("`what`"),
        "{e}"
    );
    let missing = dir.join("missing.yml");
    let e = Config::load(&missing).unwrap_err().0;
    assert!(
        e.contains("missing.yml") && e.contains("cannot read"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn workers_cpu_affinity_and_reuseport() {
    let c = load(MINIMAL);
    assert_eq!((c.workers, c.cpu_affinity, c.reuseport), (1, false, false));
    let c = load(&format!(
        "{MINIMAL}workers: 4\ncpu_affinity: true\nreuseport: yes\n"
    ));
    assert_eq!((c.workers, c.cpu_affinity, c.reuseport), (4, true, true));
    assert_eq!(Config::from_yaml_str(&c.to_yaml(), "x").unwrap(), c);
    assert_eq!(load(&format!("{MINIMAL}workers: '8'\n")).workers, 8);
    assert_eq!(load(&format!("{MINIMAL}workers: 1024\n")).workers, 1024);
    // Each bad value names the key and its line, and says what to write.
    for (bad, says) in [
        ("0", "at least 1"),
        ("-2", "1 to 1024"),
        ("many", "1 to 1024"),
        ("2.5", "1 to 1024"),
        ("[2]", "1 to 1024"),
        ("1025", "the most allowed is 1024"),
        ("100000000000000000000", "1 to 1024"),
    ] {
        let e = load_err(&format!("{MINIMAL}workers: {bad}\n"));
        assert!(
            e.contains("workers") && e.contains("line 6") && e.contains(says),
            "{bad}: {e}"
        );
    }
    for key in ["cpu_affinity", "reuseport"] {
        let e = load_err(&format!("{MINIMAL}{key}: sometimes\n"));
        assert!(e.contains(key) && e.contains("line 6"), "{e}");
    }
    // They are top-level keys, and common guesses get a pointer.
    let e = load_err(&format!("{MINIMAL}    workers: 2\n"));
    assert!(e.contains("top-level key"), "{e}");
    let e = load_err(&format!("{MINIMAL}threads: 2\n"));
    assert!(e.contains("`workers`"), "{e}");
    let e = load_err(&format!("{MINIMAL}reuse_port: true\n"));
    assert!(e.contains("`reuseport`"), "{e}");
}

#[test]
fn splice_is_on_unless_turned_off() {
    assert!(load(MINIMAL).splice);
    let c = load(&format!("{MINIMAL}splice: false\n"));
    assert!(!c.splice);
    assert_eq!(Config::from_yaml_str(&c.to_yaml(), "x").unwrap(), c);
    let e = load_err(&format!("{MINIMAL}splice: maybe\n"));
    assert!(e.contains("splice") && e.contains("line 6"), "{e}");
}

#[test]
fn max_connections_is_unlimited_unless_given_and_checked() {
    assert_eq!(load(MINIMAL).max_connections, None);
    assert_eq!(Config::builtin_default().max_connections, None);
    let c = load(&format!("{MINIMAL}max_connections: 50\n"));
    assert_eq!(c.max_connections, Some(50));
    assert!(c.to_yaml().contains("max_connections: 50"));
    assert_eq!(Config::from_yaml_str(&c.to_yaml(), "x").unwrap(), c);
    let c = load(&format!("{MINIMAL}max_connections: 10000000\n"));
    assert_eq!(c.max_connections, Some(10_000_000));
    for bad in ["0", "10000001"] {
        let e = load_err(&format!("{MINIMAL}max_connections: {bad}\n"));
        assert!(
            e.contains("max_connections") && e.contains("1 to 10000000") && e.contains("no limit"),
            "{bad}: {e}"
        );
    }
    for bad in ["-1", "many", "2.5"] {
        let e = load_err(&format!("{MINIMAL}max_connections: {bad}\n"));
        assert!(
            e.contains("max_connections") && e.contains("line 6"),
            "{bad}: {e}"
        );
    }
    let e = load_err(&format!("{MINIMAL}worker_connections: 100\n"));
    assert!(e.contains("`max_connections`"), "{e}");
    let e = load_err(&format!("{MINIMAL}    max_connections: 100\n"));
    assert!(e.contains("top-level key"), "{e}");
}

#[test]
fn request_body_keys_have_defaults_and_limits() {
    let c = load(MINIMAL);
    assert_eq!(c.request_buffer, 8192);
    assert_eq!(c.request_spool_directory, None);
    assert_eq!(c.request_spool_limit, 256 << 20);
    assert_eq!(c.min_body_rate, 1024);
    assert_eq!(c.min_body_rate_grace, Duration::from_secs(5));
    assert_eq!(c.body_timeout, Duration::from_secs(300));
    let c = load(&format!(
        "{MINIMAL}request_buffer: 0\nrequest_spool_directory: /var/tmp\nrequest_spool_limit: 0\n\
         min_body_rate: 0\nmin_body_rate_grace: 0.5\nbody_timeout: 60\n"
    ));
    assert_eq!(c.request_buffer, 0);
    assert_eq!(
        c.request_spool_directory.as_deref(),
        Some(std::path::Path::new("/var/tmp"))
    );
    assert_eq!((c.request_spool_limit, c.min_body_rate), (0, 0));
    assert_eq!(c.min_body_rate_grace, Duration::from_millis(500));
    assert_eq!(c.body_timeout, Duration::from_secs(60));
    // Printed and read back, they stay the same.
    assert_eq!(load(&c.to_yaml()), c);
    let e = load_err(&format!("{MINIMAL}request_buffer: 2000000\n"));
    assert!(e.contains("request_buffer") && e.contains("1048576"), "{e}");
    let e = load_err(&format!("{MINIMAL}body_timeout: 0\n"));
    assert!(e.contains("body_timeout"), "{e}");
    let e = load_err(&format!("{MINIMAL}request_spool_directory: ''\n"));
    assert!(e.contains("request_spool_directory"), "{e}");
    let e = load_err(&format!("{MINIMAL}min_body_rate: -1\n"));
    assert!(e.contains("min_body_rate"), "{e}");
}
