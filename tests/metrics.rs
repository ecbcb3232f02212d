//! `status_uri` end to end: the Prometheus text a running proxy serves, read
//! back with a small exposition-format parser and checked to the exact value
//! after a known sequence of requests — responses by section and class,
//! gateway errors, backends by state, the queue, the queue-wait histogram,
//! bytes, connections, redeploys, static files and reloads — over one or
//! two workers; and `status_uri` left unset, where the path is just a path.
//!
//! Accounting rule the tests lean on (`src/reactor/tally.rs`): a request is
//! counted once, into its section or into `section=""` (unrouted), when its
//! response is complete. A metrics GET is itself an unrouted 2xx, counted
//! when it completes — so the answer to the n-th scrape includes the n-1
//! before it, and none of its own bytes.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(10);
const STATUS: &str = "/status";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// A scrape's request; its `Host` serves no section (the endpoint answers
/// for every host).
const SCRAPE: &str = "GET /status HTTP/1.1\r\nHost: scraper.test\r\n\r\n";

// ---------------------------------------------------------------------------
// The exposition format
// ---------------------------------------------------------------------------

/// One sample line: `name{label="value",...} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A parsed exposition: its samples and each family's HELP and TYPE.
struct Metrics {
    text: String,
    samples: Vec<Sample>,
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
}

impl Metrics {
    /// Parses the text; panics, naming the line, on anything malformed.
    fn parse(text: &str) -> Metrics {
        let mut m = Metrics {
            text: text.to_string(),
            samples: Vec::new(),
            help: BTreeMap::new(),
            types: BTreeMap::new(),
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                m.help.insert(name.to_string(), help.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .unwrap_or_else(|| panic!("TYPE without a type: {line:?}"));
                m.types.insert(name.to_string(), kind.to_string());
            } else if line.starts_with('#') || line.is_empty() {
                continue;
            } else {
                m.samples.push(
                    parse_sample(line).unwrap_or_else(|e| panic!("bad sample line {line:?}: {e}")),
                );
            }
        }
        m
    }

    /// The family a sample name belongs to (a histogram's `_bucket`,
    /// `_sum` and `_count` belong to it); panics unless the family has
    /// both a HELP and a TYPE line.
    fn family<'a>(&self, name: &'a str) -> &'a str {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .find(|f| self.types.get(*f).map(String::as_str) == Some("histogram"))
            .unwrap_or(name);
        assert!(
            self.help.contains_key(family) && self.types.contains_key(family),
            "family {family} lacks its HELP or TYPE line:\n{}",
            self.text
        );
        family
    }

    /// The value of the one sample `name` whose labels are exactly
    /// `labels` (in any order).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.family(name);
        let want: BTreeSet<(&str, &str)> = labels.iter().copied().collect();
        let hits: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && s.labels.len() == want.len()
                    && s.labels
                        .iter()
                        .all(|(k, v)| want.contains(&(k.as_str(), v.as_str())))
            })
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "expected one sample {name}{labels:?}, found {hits:?} in:\n{}",
            self.text
        );
        hits[0].value
    }

    /// `value` for a counter or gauge that must be a whole number.
    fn int(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let v = self.value(name, labels);
        assert!(
            v >= 0.0 && v.fract() == 0.0,
            "{name}{labels:?} = {v}, not a count"
        );
        v as u64
    }

    fn section(&self, name: &str, section: &str) -> u64 {
        self.int(name, &[("section", section)])
    }

    /// Responses of `section` (`""`: unrouted) by class, 1xx … 5xx.
    fn responses(&self, section: &str) -> [u64; 5] {
        ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            self.int(
                "swiftiply_responses_total",
                &[("section", section), ("class", class)],
            )
        })
    }

    fn gateway_errors(&self, section: &str, code: &str) -> u64 {
        self.int(
            "swiftiply_gateway_errors_total",
            &[("section", section), ("code", code)],
        )
    }

    fn backends(&self, section: &str, state: &str) -> u64 {
        self.int(
            "swiftiply_backends",
            &[("section", section), ("state", state)],
        )
    }

    /// The cumulative count of the queue-wait bucket `le`.
    fn wait_bucket(&self, section: &str, le: &str) -> u64 {
        self.int(
            "swiftiply_queue_wait_seconds_bucket",
            &[("section", section), ("le", le)],
        )
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices();
        loop {
            // A label name, up to `=`; or the closing brace.
            let (start, c) = chars.next().ok_or("unterminated labels")?;
            if c == '}' {
                rest = &body[start + 1..];
                break;
            }
            let eq = body[start..].find('=').ok_or("label without '='")? + start;
            let key = body[start..eq].to_string();
            while chars.next().is_some_and(|(i, _)| i < eq) {}
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} not quoted"));
            }
            let mut value = String::new();
            loop {
                match chars.next().ok_or("unterminated label value")?.1 {
                    '"' => break,
                    '\\' => match chars.next().ok_or("dangling escape")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => return Err(format!("unknown escape \\{c}")),
                    },
                    c => value.push(c),
                }
            }
            labels.push((key, value));
            match chars.next().ok_or("unterminated labels")? {
                (_, ',') => {}
                (i, '}') => {
                    rest = &body[i + 1..];
                    break;
                }
                (_, c) => return Err(format!("unexpected {c:?} after a label")),
            }
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or("no space before the value")?
        .split(' ')
        .next()
        .unwrap_or("");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

#[test]
fn the_parser_reads_names_escaped_labels_and_values() {
    let m = Metrics::parse(
        "# HELP x_total Things.\n# TYPE x_total counter\n\
         x_total{section=\"a\\\"b\\\\c\\nd\",class=\"2xx\"} 7\n\
         # HELP w A histogram.\n# TYPE w histogram\n\
         w_bucket{le=\"+Inf\"} 3\nw_sum 0.030700\nw_count 3\n\
         # HELP up Up.\n# TYPE up gauge\nup 1\n",
    );
    assert_eq!(
        m.int("x_total", &[("class", "2xx"), ("section", "a\"b\\c\nd")]),
        7
    );
    assert_eq!(m.int("w_bucket", &[("le", "+Inf")]), 3);
    assert_eq!(m.value("w_sum", &[]), 0.0307);
    assert_eq!(m.family("w_count"), "w");
    assert_eq!(m.int("up", &[]), 1);
    for bad in ["x{a=\"1\" 2", "x{a=1} 2", "x 1.2.3", "x{a=\"\\q\"} 1", "x"] {
        assert!(parse_sample(bad).is_err(), "{bad:?} parsed");
    }
}

// ---------------------------------------------------------------------------
// Talking to the proxy
// ---------------------------------------------------------------------------

/// Scrapes on one kept-alive connection, keeping count of the bytes its
/// answers took on the wire.
struct Scraper {
    client: Client,
    bytes_received: u64,
}

impl Scraper {
    fn connect(addr: SocketAddr) -> Scraper {
        Scraper {
            client: Client::connect(addr),
            bytes_received: 0,
        }
    }

    /// One `GET /status`: checks the answer's status and content type and
    /// parses it.
    fn scrape(&mut self) -> Metrics {
        let r = self.client.request(SCRAPE.as_bytes());
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("content-type"), Some(PROMETHEUS), "{r:?}");
        self.bytes_received += wire_len(&r);
        Metrics::parse(std::str::from_utf8(&r.body).expect("metrics are UTF-8"))
    }
}

/// Bytes of a response on the wire: its head and its Content-Length body.
fn wire_len(r: &Response) -> u64 {
    let length: Option<usize> = r.header("content-length").and_then(|v| v.parse().ok());
    assert_eq!(
        length,
        Some(r.body.len()),
        "not a Content-Length body: {r:?}"
    );
    (r.raw_head.len() + r.body.len()) as u64
}

/// Bytes a client sent and received, for comparing with the counters.
#[derive(Default, Debug, Clone, Copy)]
struct Bytes {
    sent: u64,
    received: u64,
}

impl Bytes {
    fn add(&mut self, request: &[u8], response: &Response) {
        self.sent += request.len() as u64;
        self.received += wire_len(response);
    }
}

fn wait_joined(p: &Proxy, section: &str, n: usize) {
    assert!(
        p.wait_for_log_count(&format!(" joined section {section} "), n, T),
        "{n} backend(s) did not join {section}; stderr:\n{}",
        p.stderr_text()
    );
}

fn section_yaml(host: &str, extra: &str) -> String {
    format!("incoming: {host}\noutgoing: 127.0.0.1:0\n{extra}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------
// One worker
// ---------------------------------------------------------------------------

#[test]
fn every_outcome_is_counted_once_in_its_section_or_as_unrouted() {
    let p = Proxy::start(&config(
        "status_uri: /status\ntimeout: 1\nbackend_timeout: 1",
        &[
            &section_yaml("a.test", ""),
            &section_yaml("b.test", ""),
            &section_yaml("c.test", ""),
        ],
    ));
    let addr = p.client_addr();
    let (mut a, mut unrouted) = (Bytes::default(), Bytes::default());

    // a.test: three 200s (one with a request body, one with a body large
    // enough to be spliced) and one 404, all from its backend, on one
    // kept-alive connection.
    let mut backend = Backend::connect(p.backend_addr(0), &id12("a", 1), "");
    wait_joined(&p, "a.test", 1);
    let mut c = Client::connect(addr);
    let big = vec![b'x'; 200 * 1024];
    let exchanges: [(&str, &str, &[u8]); 4] = [
        (
            "GET /one HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "200 OK",
            b"one",
        ),
        (
            "POST /two HTTP/1.1\r\nHost: a.test\r\nContent-Length: 11\r\n\r\nhello world",
            "200 OK",
            b"two",
        ),
        ("GET /big HTTP/1.1\r\nHost: a.test\r\n\r\n", "200 OK", &big),
        (
            "GET /missing HTTP/1.1\r\nHost: a.test\r\n\r\n",
            "404 Not Found",
            b"no such page",
        ),
    ];
    for (request, status_line, body) in exchanges {
        c.send(request.as_bytes());
        let got = backend.expect_request();
        assert_eq!(got.raw, request.as_bytes());
        // The backend writes while the client reads: a large body does not
        // fit the socket buffers at once.
        let r = thread::scope(|s| {
            s.spawn(|| backend.respond(status_line, &[], body));
            c.read_response(false)
        });
        assert_eq!(r.status.to_string(), status_line[..3], "{r:?}");
        assert_eq!(r.body, body);
        a.add(request.as_bytes(), &r);
    }

    // Answered by the proxy before any section is chosen: an unknown host
    // (there is no default section), a malformed request, the health check.
    for (request, status) in [
        ("GET /x HTTP/1.1\r\nHost: nowhere.test\r\n\r\n", 404),
        ("NONSENSE\r\n\r\n", 400),
        (
            "GET /swiftiply_health HTTP/1.1\r\nHost: a.test\r\n\r\n",
            200,
        ),
    ] {
        let r = Client::connect(addr).request(request.as_bytes());
        assert_eq!(r.status, status, "{r:?}");
        unrouted.add(request.as_bytes(), &r);
    }

    // At the same time: b.test has no backend, so its request gets a 503
    // after `timeout: 1`; c.test's backend takes its request and never
    // answers, so that one gets a 504 after `backend_timeout: 1`.
    let _silent = Backend::connect(p.backend_addr(2), &id12("c", 1), "");
    wait_joined(&p, "c.test", 1);
    let asked = Instant::now();
    let waits: Vec<_> = [("b.test", 503), ("c.test", 504)]
        .into_iter()
        .map(|(host, status)| {
            thread::spawn(move || {
                let request = format!("GET /{status} HTTP/1.1\r\nHost: {host}\r\n\r\n");
                let r = Client::connect(addr).request(request.as_bytes());
                assert_error_response(&r, status);
                let mut bytes = Bytes::default();
                bytes.add(request.as_bytes(), &r);
                bytes
            })
        })
        .collect();
    let mut waited = waits
        .into_iter()
        .map(|h| join_within(h, T, "a client waiting for a gateway error"));
    let (b, c_bytes) = (waited.next().unwrap(), waited.next().unwrap());
    assert!(asked.elapsed() >= Duration::from_millis(900));

    // a.test's backend reads a request and closes: a.test is not
    // redeployable, so the client gets a 502.
    let request = "GET /dies HTTP/1.1\r\nHost: a.test\r\n\r\n";
    c.send(request.as_bytes());
    let died = backend.die_after_request();
    assert_eq!(died.raw, request.as_bytes());
    let r = c.read_response(false);
    assert_error_response(&r, 502);
    a.add(request.as_bytes(), &r);
    drop(c);

    // A second backend joins a.test and stays idle.
    let _idle = Backend::connect(p.backend_addr(0), &id12("a", 2), "");
    wait_joined(&p, "a.test", 2);

    let mut s = Scraper::connect(addr);
    let m = s.scrape();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(m.int("swiftiply_build_info", &[("version", version)]), 1);
    let started = m.int("swiftiply_start_time_seconds", &[]);
    assert!(
        started <= unix_now() && started + 120 >= unix_now(),
        "start time {started}"
    );
    assert_eq!(m.int("swiftiply_workers", &[]), 1);
    assert_eq!(m.int("swiftiply_config_reloads_total", &[]), 0);
    assert_eq!(m.int("swiftiply_config_reload_failures_total", &[]), 0);

    assert_eq!(m.responses("a.test"), [0, 3, 0, 1, 1], "a.test by class");
    assert_eq!(m.responses("b.test"), [0, 0, 0, 0, 1], "b.test by class");
    assert_eq!(m.responses("c.test"), [0, 0, 0, 0, 1], "c.test by class");
    assert_eq!(m.responses(""), [0, 1, 0, 2, 0], "unrouted by class");
    for (section, code, n) in [
        ("a.test", "502", 1),
        ("a.test", "503", 0),
        ("a.test", "504", 0),
        ("b.test", "502", 0),
        ("b.test", "503", 1),
        ("b.test", "504", 0),
        ("c.test", "502", 0),
        ("c.test", "503", 0),
        ("c.test", "504", 1),
    ] {
        assert_eq!(m.gateway_errors(section, code), n, "{section} {code}");
    }

    assert_eq!(m.section("swiftiply_backends_joined_total", "a.test"), 2);
    assert_eq!(m.section("swiftiply_backends_left_total", "a.test"), 1);
    assert_eq!(m.section("swiftiply_backends_joined_total", "b.test"), 0);
    assert_eq!(m.section("swiftiply_backends_left_total", "b.test"), 0);
    for (section, state, n) in [
        ("a.test", "idle", 1),
        ("a.test", "busy", 0),
        ("a.test", "handshaking", 0),
        ("b.test", "idle", 0),
        ("b.test", "busy", 0),
        ("b.test", "handshaking", 0),
        ("c.test", "idle", 0),
        ("c.test", "busy", 0),
    ] {
        assert_eq!(m.backends(section, state), n, "{section} {state}");
    }
    assert_eq!(m.section("swiftiply_backends_left_total", "c.test"), 1);
    // a.test's idle one; c.test's was closed for its silence.
    assert_eq!(m.int("swiftiply_backend_connections", &[]), 1);
    for section in ["a.test", "b.test", "c.test"] {
        assert_eq!(m.section("swiftiply_queue_depth", section), 0);
        assert_eq!(m.section("swiftiply_redeploys_total", section), 0);
        assert_eq!(m.section("swiftiply_static_files_total", section), 0);
        assert_eq!(m.section("swiftiply_handshakes_refused_total", section), 0);
    }

    // Five a.test requests reached a backend (the 502 included), and
    // c.test's one; b.test's timed out in the queue, never dispatched.
    assert_eq!(m.section("swiftiply_queue_wait_seconds_count", "a.test"), 5);
    assert_eq!(m.wait_bucket("a.test", "+Inf"), 5);
    assert_eq!(m.section("swiftiply_queue_wait_seconds_count", "b.test"), 0);
    assert_eq!(m.wait_bucket("b.test", "+Inf"), 0);
    assert_eq!(m.section("swiftiply_queue_wait_seconds_count", "c.test"), 1);

    // Bytes, per section and in all: exactly what the clients sent and
    // received (this scrape is not counted yet).
    assert_eq!(
        m.section("swiftiply_section_received_bytes_total", "a.test"),
        a.sent
    );
    assert_eq!(
        m.section("swiftiply_section_sent_bytes_total", "a.test"),
        a.received
    );
    assert_eq!(
        m.section("swiftiply_section_received_bytes_total", "b.test"),
        b.sent
    );
    assert_eq!(
        m.section("swiftiply_section_sent_bytes_total", "b.test"),
        b.received
    );
    assert_eq!(
        m.section("swiftiply_section_received_bytes_total", "c.test"),
        c_bytes.sent
    );
    assert_eq!(
        m.section("swiftiply_section_sent_bytes_total", "c.test"),
        c_bytes.received
    );
    let all = [a, b, c_bytes, unrouted];
    let sent: u64 = all.iter().map(|x| x.sent).sum();
    let received: u64 = all.iter().map(|x| x.received).sum();
    assert_eq!(m.int("swiftiply_client_received_bytes_total", &[]), sent);
    assert_eq!(m.int("swiftiply_client_sent_bytes_total", &[]), received);

    // A second scrape on the same connection: the first one is counted
    // now, as one unrouted 2xx with its bytes.
    let first_answer = s.bytes_received;
    let m = s.scrape();
    assert_eq!(m.responses(""), [0, 2, 0, 2, 0], "unrouted by class");
    assert_eq!(
        m.int("swiftiply_client_received_bytes_total", &[]),
        sent + SCRAPE.len() as u64
    );
    assert_eq!(
        m.int("swiftiply_client_sent_bytes_total", &[]),
        received + first_answer
    );
    assert_eq!(m.responses("a.test"), [0, 3, 0, 1, 1], "unchanged");

    // HEAD: the same head, no body; the connection goes on (a body sent
    // after all would be read as the next response's head).
    s.client
        .send(b"HEAD /status HTTP/1.1\r\nHost: scraper.test\r\n\r\n");
    let r = s.client.read_response(true);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some(PROMETHEUS), "{r:?}");
    let length: usize = r
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length: {r:?}"));
    assert!(length > 1000, "{r:?}");
    assert!(r.body.is_empty() && !r.says_close(), "{r:?}");
    let m = s.scrape();
    assert_eq!(m.responses(""), [0, 4, 0, 2, 0], "two GETs and a HEAD more");
}

#[test]
fn backends_by_state_the_queue_and_the_queue_wait_follow_requests_in_flight() {
    let p = Proxy::start(&one_section("status_uri: /status\ntimeout: 10", ""));
    let addr = p.client_addr();
    let mut backend = Backend::connect(p.backend_addr(0), &id12("q", 1), "");
    wait_joined(&p, "app.test", 1);
    let mut s = Scraper::connect(addr);
    let m = s.scrape();
    assert_eq!(
        [
            m.backends("app.test", "idle"),
            m.backends("app.test", "busy")
        ],
        [1, 0]
    );

    // The only backend holds the first request: busy.
    let mut first = Client::connect(addr);
    first.send(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert_eq!(backend.expect_request().target, "/first");
    let m = s.scrape();
    assert_eq!(
        [
            m.backends("app.test", "idle"),
            m.backends("app.test", "busy")
        ],
        [0, 1]
    );
    assert_eq!(m.section("swiftiply_queue_depth", "app.test"), 0);
    assert_eq!(m.int("swiftiply_backend_connections", &[]), 1);

    // Two more wait in the queue.
    let mut queued: Vec<Client> = ["/second", "/third"]
        .iter()
        .map(|path| {
            let mut c = Client::connect(addr);
            c.send(format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes());
            c
        })
        .collect();
    let mut depth = 0;
    assert!(
        eventually(T, || {
            depth = s.scrape().section("swiftiply_queue_depth", "app.test");
            depth == 2
        }),
        "queue depth {depth}, expected 2"
    );
    // A third joins the queue and leaves it before its turn.
    let mut leaving = Client::connect(addr);
    leaving.send(b"GET /gone HTTP/1.1\r\nHost: app.test\r\n\r\n");
    assert!(
        eventually(T, || {
            depth = s.scrape().section("swiftiply_queue_depth", "app.test");
            depth == 3
        }),
        "queue depth {depth}, expected 3"
    );
    drop(leaving);
    assert!(
        eventually(T, || {
            depth = s.scrape().section("swiftiply_queue_depth", "app.test");
            depth == 2
        }),
        "queue depth {depth} after a client left it, expected 2"
    );
    // They have waited at least this long when the backend frees up.
    thread::sleep(Duration::from_millis(300));

    backend.respond("200 OK", &[], b"first");
    assert_eq!(first.read_response(false).status, 200);
    for (path, c) in ["/second", "/third"].iter().zip(&mut queued) {
        let got = backend.expect_request();
        assert_eq!(got.target, *path);
        backend.respond("200 OK", &[], path.as_bytes());
        assert_eq!(c.read_response(false).body, path.as_bytes());
    }

    let m = s.scrape();
    assert_eq!(m.section("swiftiply_queue_depth", "app.test"), 0);
    assert_eq!(
        [
            m.backends("app.test", "idle"),
            m.backends("app.test", "busy")
        ],
        [1, 0]
    );
    // The one that left got no response, so it is in no class.
    assert_eq!(m.responses("app.test"), [0, 3, 0, 0, 0]);
    // The first was paired at once; the other two waited 300 ms or more.
    assert_eq!(
        m.section("swiftiply_queue_wait_seconds_count", "app.test"),
        3
    );
    for (le, n) in [("0.1", 1), ("0.25", 1), ("5", 3), ("10", 3), ("+Inf", 3)] {
        assert_eq!(m.wait_bucket("app.test", le), n, "le={le}:\n{}", m.text);
    }
    let sum = m.value(
        "swiftiply_queue_wait_seconds_sum",
        &[("section", "app.test")],
    );
    assert!((0.6..10.0).contains(&sum), "sum {sum}");
}

#[test]
fn an_open_idle_client_connection_is_counted_until_it_closes() {
    let p = Proxy::start(&one_section("status_uri: /status", ""));
    let mut s = Scraper::connect(p.client_addr());
    assert_eq!(
        s.scrape().int("swiftiply_client_connections", &[]),
        1,
        "the scraper's own connection"
    );
    let idle = TcpStream::connect(p.client_addr()).expect("connect");
    let mut open = 0;
    assert!(
        eventually(T, || {
            open = s.scrape().int("swiftiply_client_connections", &[]);
            open == 2
        }),
        "{open} client connections with one idle, expected 2"
    );
    drop(idle);
    assert!(
        eventually(T, || {
            open = s.scrape().int("swiftiply_client_connections", &[]);
            open == 1
        }),
        "{open} client connections after the idle one closed, expected 1"
    );
}

#[test]
fn redeploys_static_files_and_refused_handshakes_are_counted() {
    let docroot = TempDir::new("metrics-docroot");
    docroot.write("hello.txt", "hello from the docroot\n");
    // Large enough to go out with sendfile.
    let big = "0123456789abcdef".repeat(8 * 1024);
    docroot.write("big.txt", &big);
    let p = Proxy::start(&config(
        "status_uri: /status\ntimeout: 10",
        &[
            &section_yaml(
                "a.test",
                &format!("redeployable: true\ndocroot: {}", path_str(&docroot.path)),
            ),
            &section_yaml("b.test", "key: the-right-key"),
        ],
    ));
    let addr = p.client_addr();

    // The only backend reads the request and dies; the request waits for
    // the next backend, which answers it.
    let dying = Backend::connect(p.backend_addr(0), &id12("die", 1), "");
    wait_joined(&p, "a.test", 1);
    let request = b"POST /form HTTP/1.1\r\nHost: a.test\r\nContent-Length: 5\r\n\r\nhello";
    let client = thread::spawn(move || Client::connect(addr).request(request));
    let mut a = Bytes::default();
    let died = dying.die_after_request();
    assert_eq!(died.raw, request);
    let mut next = Backend::connect(p.backend_addr(0), &id12("next", 1), "");
    let again = next.expect_request();
    assert_eq!(again.raw, request, "the redeployed request");
    next.respond_echo(&again);
    let r = join_within(client, T, "client");
    assert_eq!(r.status, 200, "{r:?}");
    a.add(request, &r);

    // Files from the docroot, no backend involved: a small one, a large
    // one, and the large one's head alone.
    let mut c = Client::connect(addr);
    for (method, path, body) in [
        ("GET", "/hello.txt", "hello from the docroot\n"),
        ("GET", "/big.txt", big.as_str()),
        ("HEAD", "/big.txt", ""),
    ] {
        let request = format!("{method} {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        let r = c.request(request.as_bytes());
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, body.as_bytes());
        a.sent += request.len() as u64;
        a.received += (r.raw_head.len() + r.body.len()) as u64;
    }

    // A backend with the wrong key is refused.
    let mut refused = Backend::connect(p.backend_addr(1), &id12("bad", 1), "wrong-key");
    assert!(refused.is_closed(T), "a wrong key was accepted");

    let m = Scraper::connect(addr).scrape();
    assert_eq!(m.section("swiftiply_redeploys_total", "a.test"), 1);
    assert_eq!(m.section("swiftiply_static_files_total", "a.test"), 3);
    assert_eq!(
        m.responses("a.test"),
        [0, 4, 0, 0, 0],
        "redeployed + static"
    );
    assert_eq!(
        m.section("swiftiply_section_received_bytes_total", "a.test"),
        a.sent
    );
    assert_eq!(
        m.section("swiftiply_section_sent_bytes_total", "a.test"),
        a.received,
        "bytes of one proxied response and three files"
    );
    assert_eq!(m.gateway_errors("a.test", "502"), 0);
    assert_eq!(m.section("swiftiply_backends_joined_total", "a.test"), 2);
    assert_eq!(m.section("swiftiply_backends_left_total", "a.test"), 1);
    // Waited once, however often it was dispatched; the files never waited.
    assert_eq!(m.section("swiftiply_queue_wait_seconds_count", "a.test"), 1);
    assert_eq!(m.section("swiftiply_handshakes_refused_total", "b.test"), 1);
    assert_eq!(m.section("swiftiply_handshakes_refused_total", "a.test"), 0);
    assert_eq!(m.section("swiftiply_backends_joined_total", "b.test"), 0);
    assert_eq!(m.backends("b.test", "handshaking"), 0);
}

#[test]
fn reloads_and_refused_reloads_are_counted_and_section_counters_follow_their_section() {
    let p = Proxy::start(&config(
        "status_uri: /status",
        &[&section_yaml("a.test", ""), &section_yaml("b.test", "")],
    ));
    let addr = p.client_addr();
    let (a_addr, b_addr) = (p.backend_addr(0), p.backend_addr(1));
    let mut farm = EchoFarm::start(a_addr, "", 1, false);
    wait_joined(&p, "a.test", 1);
    assert_eq!(get_once(addr, "a.test", "/before").status, 200);

    // The same sections (same backend addresses) in the other order, and
    // a.test with one more host name.
    let swapped = |top: &str| {
        config(
            top,
            &[
                &format!("incoming: b.test\noutgoing: {b_addr}"),
                &format!("incoming: [a.test, www.a.test]\noutgoing: {a_addr}"),
            ],
        )
    };
    p.reload(&swapped("status_uri: /status"))
        .expect("the reload is accepted");
    let m = Scraper::connect(addr).scrape();
    assert_eq!(m.int("swiftiply_config_reloads_total", &[]), 1);
    assert_eq!(m.int("swiftiply_config_reload_failures_total", &[]), 0);
    assert_eq!(m.responses("a.test"), [0, 1, 0, 0, 0], "carried over");
    assert_eq!(m.responses("b.test"), [0; 5]);
    assert_eq!(m.section("swiftiply_backends_joined_total", "a.test"), 1);
    assert_eq!(m.section("swiftiply_backends_joined_total", "b.test"), 0);
    assert_eq!(m.backends("a.test", "idle"), 1);
    assert_eq!(m.backends("b.test", "idle"), 0);
    assert_eq!(m.section("swiftiply_queue_wait_seconds_count", "a.test"), 1);

    p.reload("map: [unterminated\n")
        .expect_err("a broken config is refused");
    let m = Scraper::connect(addr).scrape();
    assert_eq!(m.int("swiftiply_config_reloads_total", &[]), 1);
    assert_eq!(m.int("swiftiply_config_reload_failures_total", &[]), 1);

    // Without status_uri the path is the backend's again.
    p.reload(&swapped("")).expect("the reload is accepted");
    let r = get_once(addr, "www.a.test", STATUS);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-backend"), Some(farm.ids[0].as_str()), "{r:?}");
    assert!(
        farm.wait_for(T, |seen| seen.complete && seen.target == STATUS),
        "the backend never saw {STATUS}"
    );
}

/// docs/operations.md: a section's byte counters are the bytes "for the section's
/// requests". Two requests sent in one write, to two sections, are read in
/// one go: each must still count only its own bytes.
#[test]
fn pipelined_requests_count_their_own_bytes_in_their_own_sections() {
    let p = Proxy::start(&config(
        "status_uri: /status",
        &[&section_yaml("a.test", ""), &section_yaml("b.test", "")],
    ));
    let _a = EchoFarm::start(p.backend_addr(0), "", 1, false);
    let _b = EchoFarm::start(p.backend_addr(1), "", 1, false);
    wait_joined(&p, "a.test", 1);
    wait_joined(&p, "b.test", 1);
    let to_a = "GET /first HTTP/1.1\r\nHost: a.test\r\n\r\n";
    let to_b = "GET /second-with-a-longer-path HTTP/1.1\r\nHost: b.test\r\n\r\n";
    let mut c = Client::connect(p.client_addr());
    c.send(format!("{to_a}{to_b}").as_bytes());
    let (ra, rb) = (c.read_response(false), c.read_response(false));
    assert_eq!((ra.status, rb.status), (200, 200));

    let m = Scraper::connect(p.client_addr()).scrape();
    assert_eq!(
        m.int("swiftiply_client_received_bytes_total", &[]),
        (to_a.len() + to_b.len()) as u64
    );
    assert_eq!(
        (
            m.section("swiftiply_section_received_bytes_total", "a.test"),
            m.section("swiftiply_section_received_bytes_total", "b.test"),
        ),
        (to_a.len() as u64, to_b.len() as u64),
        "bytes received for each section's request (a.test's, b.test's)"
    );
    assert_eq!(
        (
            m.section("swiftiply_section_sent_bytes_total", "a.test"),
            m.section("swiftiply_section_sent_bytes_total", "b.test"),
        ),
        (wire_len(&ra), wire_len(&rb))
    );
}

#[test]
fn without_status_uri_the_path_is_proxied_like_any_other() {
    let p = Proxy::start(&one_section("", ""));
    let mut backend = Backend::connect(p.backend_addr(0), &id12("plain", 1), "");
    wait_joined(&p, "app.test", 1);
    let addr = p.client_addr();
    let client = thread::spawn(move || get_once(addr, "app.test", STATUS));
    let got = backend.expect_request();
    assert_eq!(got.target, STATUS);
    backend.respond("200 OK", &[("Content-Type", "text/plain")], b"mine");
    let r = join_within(client, T, "client");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"mine"[..]), "{r:?}");
}

// ---------------------------------------------------------------------------
// Two workers
// ---------------------------------------------------------------------------

#[test]
fn with_two_workers_one_scrape_adds_up_both() {
    const N: u64 = 24;
    let p = Proxy::start(&one_section("status_uri: /status\nworkers: 2", ""));
    let farm = EchoFarm::start(p.backend_addr(0), "", 2, false);
    wait_joined(&p, "app.test", 2);
    let addr = p.client_addr();

    // Connections opened together: the kernel spreads them over both
    // workers, each with one backend.
    let mut clients: Vec<Client> = (0..N).map(|_| Client::connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(format!("GET /r{i} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes());
    }
    let mut served_by = BTreeSet::new();
    for c in &mut clients {
        let r = c.read_response(false);
        assert_eq!(r.status, 200, "{r:?}");
        served_by.insert(r.header("x-backend").unwrap_or("").to_string());
    }
    drop(clients);
    assert_eq!(
        served_by,
        farm.ids.iter().cloned().collect(),
        "both workers' backends served (all on one: a chance of 2 in 2^{N})"
    );

    // Another worker's figures are at most a second old.
    let mut s = Scraper::connect(addr);
    let mut seen = Vec::new();
    let done = eventually(Duration::from_secs(5), || {
        let m = s.scrape();
        let got = (
            m.responses("app.test")[1],
            m.section("swiftiply_queue_wait_seconds_count", "app.test"),
            m.backends("app.test", "idle"),
            m.section("swiftiply_backends_joined_total", "app.test"),
        );
        seen.push(got);
        got == (N, N, 2, 2)
    });
    assert!(done, "(2xx, waits, idle, joined) over time: {seen:?}");
    assert!(
        seen.iter().all(|&(ok, waits, _, _)| ok <= N && waits <= N),
        "{seen:?}"
    );
    let m = s.scrape();
    assert_eq!(m.int("swiftiply_workers", &[]), 2);
    assert_eq!(m.int("swiftiply_backend_connections", &[]), 2);
}

/// A section with only a docroot has no backend address to follow through
/// a reload: it keeps its counters by its name.
#[test]
fn a_docroot_only_section_keeps_its_counters_across_a_reload() {
    let dir = TempDir::new("metrics-static");
    let root = dir.path.join("root");
    std::fs::create_dir(&root).expect("docroot");
    std::fs::write(root.join("a.txt"), "a\n").expect("file");
    let yaml = config(
        "status_uri: /status",
        &[&format!(
            "incoming: static.test\ndocroot: {}",
            root.display()
        )],
    );
    let p = Proxy::start(&yaml);
    let addr = p.client_addr();
    for _ in 0..3 {
        assert_eq!(get_once(addr, "static.test", "/a.txt").status, 200);
    }
    p.reload(&yaml).expect("the reload is accepted");
    assert_eq!(get_once(addr, "static.test", "/a.txt").status, 200);
    let m = Scraper::connect(addr).scrape();
    assert_eq!(m.responses("static.test"), [0, 4, 0, 0, 0]);
    assert_eq!(m.section("swiftiply_static_files_total", "static.test"), 4);
}
