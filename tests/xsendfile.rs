//! X-Sendfile (docs/static-files.md): in a section with `sendfileroot`, a backend
//! response carrying `X-Sendfile: <path>` is answered with that file. The
//! backend's status and headers are kept (X-Sendfile, Content-Length and the
//! framing headers replaced); its own body — Content-Length, chunked or
//! packet mode — is read to its end and discarded, so the same backend
//! connection serves the next request cleanly. Missing file: the backend's
//! response passes through unchanged, or a 404 with
//! `enable_sendfile_404`. Traversal through the header is treated as
//! missing. HEAD, ranges, HTTP/1.0 keep-alive, memory for a large file.
//!
//! Each test runs one scripted backend, so a second request must reach the
//! same backend connection.

mod common;

use common::*;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const HOST: &str = "app.test";
const JOIN: Duration = Duration::from_secs(60);
/// 20 bytes the backend sends as its own body next to X-Sendfile.
const IGNORED: &[u8] = b"IGNORED-BACKEND-BODY";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

struct Xs {
    p: Proxy,
    root: PathBuf,
    /// `<tmp>/outside.txt`'s contents: must never come back.
    secret: String,
    #[allow(dead_code)] // removed on drop
    dir: TempDir,
}

/// A sendfileroot `<tmp>/files` filled by `build`, `<tmp>/outside.txt`
/// beside it, and a proxy whose default section has `sendfileroot` (plus
/// `extra` keys).
fn xsite(extra: &str, build: impl FnOnce(&Path)) -> Xs {
    xsite_top("", extra, build)
}

/// `xsite` with top-level config lines.
fn xsite_top(top: &str, extra: &str, build: impl FnOnce(&Path)) -> Xs {
    let dir = TempDir::new("xsendfile");
    let root = dir.path.join("files");
    fs::create_dir_all(&root).unwrap();
    let secret = format!("TOP-SECRET-OUTSIDE-{}", token("secret"));
    fs::write(dir.path.join("outside.txt"), &secret).unwrap();
    build(&root);
    let p = Proxy::start(&one_section(
        top,
        &format!("sendfileroot: {}\n{extra}", root.display()),
    ));
    Xs {
        p,
        root,
        secret,
        dir,
    }
}

fn put(root: &Path, rel: &str, contents: &[u8]) -> PathBuf {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, contents).unwrap();
    p
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(13).wrapping_add(seed) % 251) as u8)
        .collect()
}

static IDS: AtomicUsize = AtomicUsize::new(1);

/// One backend connection to the section, scripted by `script` in a thread.
fn backend(x: &Xs, script: impl FnOnce(&mut Backend) + Send + 'static) -> thread::JoinHandle<()> {
    let mut b = Backend::connect(
        x.p.backend_addr(0),
        &id12("xs", IDS.fetch_add(1, Ordering::SeqCst)),
        "",
    );
    thread::spawn(move || script(&mut b))
}

/// A backend response head: the status line, `headers`, a blank line.
fn head(status: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("HTTP/1.1 {status}\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A 200 with `X-Sendfile: value` and the 20-byte IGNORED body.
fn sendfile_response(value: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut hs: Vec<(&str, &str)> = vec![("X-Sendfile", value), ("Content-Length", "20")];
    hs.extend_from_slice(extra);
    let mut out = head("200 OK", &hs);
    out.extend_from_slice(IGNORED);
    out
}

fn req_bytes(method: &str, target: &str, version: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{method} {target} {version}\r\nHost: {HOST}\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn send(c: &mut Client, method: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    c.request(&req_bytes(method, target, "HTTP/1.1", headers))
}

fn assert_body(r: &Response, want: &[u8], what: &str) {
    if r.body != want {
        let diff = r
            .body
            .iter()
            .zip(want.iter())
            .position(|(a, b)| a != b)
            .unwrap_or(r.body.len().min(want.len()));
        panic!(
            "{what}: body differs from the file: got {} bytes, want {}, first difference at {diff}; {r:?}",
            r.body.len(),
            want.len()
        );
    }
}

/// The file came back in place of the backend's body.
fn assert_sent_file(r: &Response, file: &[u8], what: &str) {
    assert_eq!(
        r.headers_all("content-length"),
        vec![file.len().to_string().as_str()],
        "{what}: exactly one Content-Length, the file's: {r:?}"
    );
    assert_body(r, file, what);
    assert!(
        r.header("x-sendfile").is_none(),
        "{what}: X-Sendfile leaked to the client: {r:?}"
    );
    assert!(
        r.header("transfer-encoding").is_none(),
        "{what}: the backend's framing leaked: {r:?}"
    );
    assert!(
        r.header("x-swiftiply-close").is_none(),
        "{what}: the backend's framing leaked: {r:?}"
    );
    let etag = r
        .header("etag")
        .unwrap_or_else(|| panic!("{what}: no ETag: {r:?}"));
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "{what}: ETag {etag:?}"
    );
    let lm = r
        .header("last-modified")
        .unwrap_or_else(|| panic!("{what}: no Last-Modified: {r:?}"));
    assert!(lm.ends_with(" GMT") && lm.len() == 29, "{what}: {lm:?}");
    assert_eq!(r.header("accept-ranges"), Some("bytes"), "{what}: {r:?}");
    assert!(
        !r.body_contains("IGNORED-BACKEND"),
        "{what}: the backend's own body came through: {r:?}"
    );
}

/// The backend echoed exactly `sent` (the proxy forwarded it cleanly and
/// read no leftover bytes as a response).
fn assert_echo(r: &Response, sent: &[u8], what: &str) {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    assert!(r.has_header("x-backend"), "{what}: {r:?}");
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        String::from_utf8_lossy(sent),
        "{what}: the backend did not see exactly the next request"
    );
}

/// Sends a plain GET on `c` that the backend must echo.
fn next_request_echoed(c: &mut Client, tag: &str) {
    let path: String = tag
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
        .collect();
    let sent = req_bytes("GET", &format!("/next/{path}"), "HTTP/1.1", &[]);
    let r = c.request(&sent);
    assert_echo(&r, &sent, &format!("request after {tag}"));
}

// ---------------------------------------------------------------------------
// Found
// ---------------------------------------------------------------------------

#[test]
fn found_file_replaces_body_keeps_backend_headers_and_backend_stays_in_sync() {
    let file = pattern(50_000, 1);
    let f2 = file.clone();
    let x = xsite("", |root| {
        put(root, "report.pdf", &f2);
    });
    let h = backend(&x, |b| {
        let r = b.expect_request();
        assert_eq!(r.target, "/download");
        b.write(&sendfile_response(
            "report.pdf",
            &[
                ("Content-Type", "application/pdf"),
                ("Content-Disposition", "attachment; filename=\"q3.pdf\""),
                ("X-Custom", "kept"),
                ("Set-Cookie", "session=abc; Path=/"),
                ("Cache-Control", "private"),
            ],
        ));
        b.echo_one();
        // Once more, the head written in awkward pieces.
        let r = b.expect_request();
        assert_eq!(r.target, "/download2");
        b.write_split(
            &sendfile_response("report.pdf", &[("Content-Type", "application/pdf")]),
            AWKWARD,
            Duration::from_millis(1),
        );
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    let r = send(&mut c, "GET", "/download", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_sent_file(&r, &file, "report.pdf");
    assert_eq!(
        r.headers_all("content-type"),
        vec!["application/pdf"],
        "{r:?}"
    );
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"q3.pdf\""),
        "{r:?}"
    );
    assert_eq!(r.header("x-custom"), Some("kept"), "{r:?}");
    assert_eq!(r.header("set-cookie"), Some("session=abc; Path=/"), "{r:?}");
    assert_eq!(r.header("cache-control"), Some("private"), "{r:?}");
    assert!(!r.says_close(), "{r:?}");
    next_request_echoed(&mut c, "first");
    let r = send(&mut c, "GET", "/download2", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_sent_file(&r, &file, "split head");
    next_request_echoed(&mut c, "second");
    join_within(h, JOIN, "backend");
}

#[test]
fn backend_status_is_kept() {
    let x = xsite("", |root| {
        put(root, "a.txt", b"accepted file");
    });
    let h = backend(&x, |b| {
        b.expect_request();
        let mut out = head(
            "202 Accepted",
            &[("X-Sendfile", "a.txt"), ("Content-Length", "20")],
        );
        out.extend_from_slice(IGNORED);
        b.write(&out);
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    let r = send(&mut c, "GET", "/accept", &[]);
    assert_eq!(r.status, 202, "{r:?}");
    assert_sent_file(&r, b"accepted file", "202");
    next_request_echoed(&mut c, "202");
    join_within(h, JOIN, "backend");
}

#[test]
fn chunked_backend_body_is_read_and_discarded() {
    let file = pattern(30_000, 2);
    let f2 = file.clone();
    let x = xsite("", |root| {
        put(root, "c.bin", &f2);
    });
    let h = backend(&x, |b| {
        b.expect_request();
        b.write(&head(
            "200 OK",
            &[
                ("Content-Type", "application/x-thing"),
                ("Transfer-Encoding", "chunked"),
                ("X-Sendfile", "c.bin"),
            ],
        ));
        // The body in pieces, slowly, with a trailer.
        let body = b"5;ext=1\r\nhello\r\n10\r\nsixteen bytes!!!\r\n0\r\nX-Trailer: t\r\n\r\n";
        b.write_split(body, &[1, 3, 7, 2, 11], Duration::from_millis(20));
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    let r = send(&mut c, "GET", "/chunked", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_sent_file(&r, &file, "chunked backend body");
    assert_eq!(r.header("content-type"), Some("application/x-thing"));
    assert!(!r.body_contains("sixteen"), "{r:?}");
    next_request_echoed(&mut c, "chunked");
    join_within(h, JOIN, "backend");
}

#[test]
fn packet_mode_backend_body_is_read_and_discarded() {
    let x = xsite("", |root| {
        put(root, "p.txt", b"packet mode replaced");
    });
    let h = backend(&x, |b| {
        b.expect_request();
        b.write(&head(
            "200 OK",
            &[("X-Swiftiply-Close", "1"), ("X-Sendfile", "p.txt")],
        ));
        let stream = packet_stream(&[b"first", b"", b"--------", b"last"]);
        b.write_split(&stream, AWKWARD, Duration::from_millis(1));
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    let r = send(&mut c, "GET", "/packets", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_sent_file(&r, b"packet mode replaced", "packet mode");
    next_request_echoed(&mut c, "packets");
    join_within(h, JOIN, "backend");
}

#[test]
fn large_and_slow_backend_bodies_are_discarded() {
    let file = pattern(4 << 20, 3);
    let f2 = file.clone();
    let x = xsite("", |root| {
        put(root, "big.bin", &f2);
        put(root, "small.txt", b"small");
    });
    let h = backend(&x, |b| {
        // 2 MiB of backend body next to the header.
        b.expect_request();
        let junk = vec![b'j'; 2 << 20];
        let len = junk.len().to_string();
        b.write(&head(
            "200 OK",
            &[("X-Sendfile", "big.bin"), ("Content-Length", &len)],
        ));
        for piece in junk.chunks(64 * 1024) {
            b.write(piece);
        }
        b.echo_one();
        // A body that trickles in after the head.
        b.expect_request();
        b.write(&head(
            "200 OK",
            &[("X-Sendfile", "small.txt"), ("Content-Length", "20")],
        ));
        thread::sleep(Duration::from_millis(300));
        b.write(&IGNORED[..7]);
        thread::sleep(Duration::from_millis(300));
        b.write(&IGNORED[7..]);
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    let r = send(&mut c, "GET", "/big", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_sent_file(&r, &file, "big with 2 MiB backend body");
    assert!(!r.body_contains("jjjjjjjj"));
    next_request_echoed(&mut c, "big");
    let r = send(&mut c, "GET", "/trickle", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_sent_file(&r, b"small", "slow backend body");
    next_request_echoed(&mut c, "trickle");
    join_within(h, JOIN, "backend");
}

#[test]
fn header_value_is_a_path_under_the_root_not_percent_decoded() {
    let x = xsite("", |root| {
        put(root, "sub/data.bin", b"in a subdirectory");
        put(root, "a%20b.txt", b"literal percent name");
        put(root, "a b.txt", b"decoded name: wrong");
        put(root, "top.txt", b"top");
    });
    let cases: Vec<(&str, &[u8])> = vec![
        ("sub/data.bin", b"in a subdirectory"),
        ("/sub/data.bin", b"in a subdirectory"),
        ("a%20b.txt", b"literal percent name"),
        ("/top.txt", b"top"),
    ];
    let n = cases.len();
    let values: Vec<String> = cases.iter().map(|(v, _)| v.to_string()).collect();
    let h = backend(&x, move |b| {
        for (i, v) in values.iter().enumerate() {
            b.expect_request();
            // Header name in another case on every other response.
            let name = if i % 2 == 0 {
                "x-sendfile"
            } else {
                "X-SENDFILE"
            };
            let mut out = head("200 OK", &[(name, v.as_str()), ("Content-Length", "20")]);
            out.extend_from_slice(IGNORED);
            b.write(&out);
        }
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    for (i, (v, want)) in cases.iter().enumerate() {
        let r = send(&mut c, "GET", &format!("/case/{i}"), &[]);
        assert_eq!(r.status, 200, "{v}: {r:?}");
        assert_sent_file(&r, want, v);
    }
    next_request_echoed(&mut c, &format!("{n} cases"));
    join_within(h, JOIN, "backend");
}

// ---------------------------------------------------------------------------
// Missing and traversal
// ---------------------------------------------------------------------------

#[test]
fn missing_file_passes_the_backend_response_through_unchanged() {
    let x = xsite("", |root| {
        put(root, "exists.txt", b"exists");
    });
    let h = backend(&x, |b| {
        b.expect_request();
        b.respond(
            "200 OK",
            &[
                ("X-Sendfile", "nope.txt"),
                ("Content-Type", "text/plain"),
                ("X-Custom", "kept"),
            ],
            b"the backend's own body",
        );
        b.expect_request();
        b.write(&head(
            "200 OK",
            &[
                ("X-Sendfile", "missing/dir/x.bin"),
                ("Transfer-Encoding", "chunked"),
            ],
        ));
        b.write_split(
            b"6\r\nchunk \r\n4\r\nbody\r\n0\r\n\r\n",
            &[3, 5, 1],
            Duration::from_millis(5),
        );
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    let r = send(&mut c, "GET", "/missing", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), "the backend's own body", "{r:?}");
    assert_eq!(r.header("x-sendfile"), Some("nope.txt"), "{r:?}");
    assert_eq!(r.header("content-length"), Some("22"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{r:?}");
    assert_eq!(r.header("x-custom"), Some("kept"), "{r:?}");
    let r = send(&mut c, "GET", "/missing-chunked", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), "chunk body", "{r:?}");
    assert_eq!(r.header("x-sendfile"), Some("missing/dir/x.bin"), "{r:?}");
    next_request_echoed(&mut c, "missing");
    join_within(h, JOIN, "backend");
}

#[test]
fn missing_file_with_enable_sendfile_404() {
    let x = xsite("enable_sendfile_404: true", |root| {
        put(root, "exists.txt", b"exists");
    });
    let h = backend(&x, |b| {
        b.expect_request();
        b.write(&sendfile_response(
            "reports/q9.pdf",
            &[("Content-Type", "application/pdf")],
        ));
        b.expect_request();
        b.write(&sendfile_response("exists.txt", &[]));
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    let r = send(&mut c, "GET", "/q9", &[]);
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        r.body_contains("reports/q9.pdf could not be found"),
        "the 404 body must say `<path> could not be found`: {r:?}"
    );
    assert!(!r.body_contains("IGNORED-BACKEND"), "{r:?}");
    assert!(r.header("x-sendfile").is_none(), "{r:?}");
    let cl = r.header("content-length").map(|v| v.parse::<usize>().ok());
    assert!(
        cl.is_none() || cl == Some(Some(r.body.len())),
        "Content-Length does not match the 404 body: {r:?}"
    );
    // The backend connection is still in sync: the next request (on this
    // connection if the 404 kept it, else on a new one) is served right.
    if r.says_close() {
        assert!(c.is_closed(Duration::from_secs(3)));
        c = Client::connect(x.p.client_addr());
    }
    let r = send(&mut c, "GET", "/exists", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_sent_file(&r, b"exists", "after the 404");
    next_request_echoed(&mut c, "404");
    join_within(h, JOIN, "backend");
}

fn traversal_values(x: &Xs) -> Vec<String> {
    let outside = x.root.parent().unwrap().join("outside.txt");
    vec![
        "../outside.txt".into(),
        "/../outside.txt".into(),
        "sub/../../outside.txt".into(),
        "/../../etc/passwd".into(),
        "../../../../../../../../etc/passwd".into(),
        "./../outside.txt".into(),
        "%2e%2e/outside.txt".into(),
        "..%2foutside.txt".into(),
        "link_out.txt".into(),
        "updir/outside.txt".into(),
        "etc_link/passwd".into(),
        outside.display().to_string(),
        "exists.txt\0../../outside.txt".replace('\0', "%00"),
    ]
}

fn traversal_site(extra: &str) -> Xs {
    xsite(extra, |root| {
        put(root, "exists.txt", b"exists");
        put(root, "sub/in.txt", b"in");
        symlink("../outside.txt", root.join("link_out.txt")).unwrap();
        symlink("..", root.join("updir")).unwrap();
        symlink("/etc", root.join("etc_link")).unwrap();
    })
}

fn passwd_first_line() -> String {
    fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("root:x:0:0:")
        .to_string()
}

#[test]
fn traversal_through_the_header_is_treated_as_missing() {
    let x = traversal_site("");
    let values = traversal_values(&x);
    let vs = values.clone();
    let h = backend(&x, move |b| {
        for (i, v) in vs.iter().enumerate() {
            b.expect_request();
            b.respond(
                "200 OK",
                &[("X-Sendfile", v.as_str())],
                format!("backend body {i}").as_bytes(),
            );
        }
        b.echo_one();
    });
    let passwd = passwd_first_line();
    let mut c = Client::connect(x.p.client_addr());
    for (i, v) in values.iter().enumerate() {
        let r = send(&mut c, "GET", &format!("/t/{i}"), &[]);
        assert!(
            !r.body_contains(&x.secret) && !r.body_contains(&passwd),
            "X-Sendfile {v:?}: A FILE OUTSIDE THE SENDFILEROOT CAME BACK: {r:?}"
        );
        assert_eq!(r.status, 200, "{v:?}: {r:?}");
        assert_eq!(
            r.body_str(),
            format!("backend body {i}"),
            "X-Sendfile {v:?}: expected the backend's response unchanged"
        );
    }
    next_request_echoed(&mut c, "traversal");
    join_within(h, JOIN, "backend");
}

#[test]
fn traversal_through_the_header_with_404_flag_gets_404() {
    let x = traversal_site("enable_sendfile_404: true");
    let values = traversal_values(&x);
    let vs = values.clone();
    let h = backend(&x, move |b| {
        for v in vs.iter() {
            b.expect_request();
            b.write(&sendfile_response(v, &[]));
        }
        b.echo_one();
    });
    let passwd = passwd_first_line();
    for (i, v) in values.iter().enumerate() {
        let mut c = Client::connect(x.p.client_addr());
        let r = send(&mut c, "GET", &format!("/t/{i}"), &[]);
        assert!(
            !r.body_contains(&x.secret) && !r.body_contains(&passwd),
            "X-Sendfile {v:?}: A FILE OUTSIDE THE SENDFILEROOT CAME BACK: {r:?}"
        );
        assert_eq!(r.status, 404, "X-Sendfile {v:?}: {r:?}");
        assert!(r.body_contains("could not be found"), "{v:?}: {r:?}");
    }
    let mut c = Client::connect(x.p.client_addr());
    next_request_echoed(&mut c, "traversal 404");
    join_within(h, JOIN, "backend");
}

#[test]
fn section_without_sendfileroot_passes_x_sendfile_through() {
    let dir = TempDir::new("xsendfile-none");
    let f = put(&dir.path, "report.txt", b"never sent");
    let p = Proxy::start(&one_section("", ""));
    let mut b = Backend::connect(p.backend_addr(0), &id12("xsnone", 1), "");
    let abs = f.display().to_string();
    let abs2 = abs.clone();
    let h = thread::spawn(move || {
        b.expect_request();
        b.respond("200 OK", &[("X-Sendfile", abs2.as_str())], b"app body");
        b.echo_one();
    });
    let mut c = Client::connect(p.client_addr());
    let r = send(&mut c, "GET", "/x", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str(), "app body", "{r:?}");
    assert_eq!(r.header("x-sendfile"), Some(abs.as_str()), "{r:?}");
    next_request_echoed(&mut c, "no sendfileroot");
    join_within(h, JOIN, "backend");
}

// ---------------------------------------------------------------------------
// HEAD, ranges, HTTP/1.0
// ---------------------------------------------------------------------------

#[test]
fn head_request_gets_the_files_headers_without_body() {
    let file = pattern(12_345, 4);
    let f2 = file.clone();
    let x = xsite("", |root| {
        put(root, "h.bin", &f2);
    });
    let h = backend(&x, |b| {
        let r = b.expect_request();
        assert_eq!(r.method, "HEAD");
        // A HEAD response: Content-Length of what GET would send, no body.
        b.write(&head(
            "200 OK",
            &[
                ("X-Sendfile", "h.bin"),
                ("Content-Length", "20"),
                ("Content-Type", "x/y"),
            ],
        ));
        let r = b.expect_request();
        assert_eq!(r.method, "GET");
        b.write(&sendfile_response("h.bin", &[("Content-Type", "x/y")]));
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    let r = send(&mut c, "HEAD", "/h", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty());
    assert_eq!(r.header("content-length"), Some("12345"), "{r:?}");
    assert!(r.header("x-sendfile").is_none(), "{r:?}");
    assert!(r.header("etag").is_some(), "{r:?}");
    let r = send(&mut c, "GET", "/h", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_sent_file(&r, &file, "GET after HEAD");
    assert_eq!(r.header("content-type"), Some("x/y"));
    next_request_echoed(&mut c, "head");
    join_within(h, JOIN, "backend");
}

#[test]
fn ranges_work_on_x_sendfile_responses() {
    let file = pattern(1000, 5);
    let f2 = file.clone();
    let x = xsite("", |root| {
        put(root, "r.bin", &f2);
    });
    let h = backend(&x, |b| {
        for _ in 0..5 {
            let r = b.expect_request();
            assert!(
                r.header("range").is_some(),
                "the Range header reaches the backend"
            );
            b.write(&sendfile_response("r.bin", &[]));
        }
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    let r = send(&mut c, "GET", "/r", &[("Range", "bytes=10-19")]);
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"), "{r:?}");
    assert_eq!(r.header("content-length"), Some("10"), "{r:?}");
    assert_body(&r, &file[10..20], "bytes=10-19");
    let r = send(&mut c, "GET", "/r", &[("Range", "bytes=-5")]);
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(
        r.header("content-range"),
        Some("bytes 995-999/1000"),
        "{r:?}"
    );
    assert_body(&r, &file[995..], "bytes=-5");
    let r = send(&mut c, "GET", "/r", &[("Range", "bytes=900-")]);
    assert_eq!(r.status, 206, "{r:?}");
    assert_body(&r, &file[900..], "bytes=900-");
    let r = send(&mut c, "GET", "/r", &[("Range", "bytes=5000-")]);
    assert_eq!(r.status, 416, "{r:?}");
    assert_eq!(r.header("content-range"), Some("bytes */1000"), "{r:?}");
    assert!(r.body.is_empty(), "{r:?}");
    assert!(!r.says_close(), "a 416 keeps the connection: {r:?}");
    let r = send(&mut c, "GET", "/r", &[("Range", "bytes=0-1,5-6")]);
    assert_eq!(r.status, 200, "several ranges: the whole file: {r:?}");
    assert_sent_file(&r, &file, "several ranges");
    next_request_echoed(&mut c, "ranges");
    join_within(h, JOIN, "backend");
}

#[test]
fn http10_clients_with_and_without_keepalive() {
    let x = xsite("", |root| {
        put(root, "ten.txt", b"for HTTP/1.0");
    });
    let h = backend(&x, |b| {
        for _ in 0..3 {
            let r = b.expect_request();
            assert_eq!(r.version, "HTTP/1.0");
            b.write(&sendfile_response(
                "ten.txt",
                &[("Content-Type", "text/plain")],
            ));
        }
        b.echo_one();
    });
    let ka = [("Connection", "keep-alive")];
    let mut c = Client::connect(x.p.client_addr());
    for i in 0..2 {
        let r = c.request(&req_bytes("GET", "/ten", "HTTP/1.0", &ka));
        assert_eq!(r.status, 200, "{r:?}");
        assert_sent_file(&r, b"for HTTP/1.0", &format!("1.0 keep-alive {i}"));
        assert!(r.says_keep_alive(), "{r:?}");
    }
    let r = c.request(&req_bytes("GET", "/ten", "HTTP/1.0", &[]));
    assert_eq!(r.status, 200, "{r:?}");
    assert_sent_file(&r, b"for HTTP/1.0", "1.0 without keep-alive");
    assert!(c.is_closed(Duration::from_secs(3)));
    let mut c = Client::connect(x.p.client_addr());
    next_request_echoed(&mut c, "1.0");
    join_within(h, JOIN, "backend");
}

// ---------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------

#[test]
fn large_x_sendfile_to_a_slow_client_keeps_memory_flat() {
    let len: u64 = 128 << 20;
    let x = xsite("", |root| {
        let mut f = fs::File::create(root.join("big.bin")).unwrap();
        f.set_len(len).unwrap();
        for (i, off) in [0u64, 1 << 20, 77 << 20, len - 4096].iter().enumerate() {
            f.seek(SeekFrom::Start(*off)).unwrap();
            f.write_all(&pattern(4096, i as u32)).unwrap();
        }
    });
    let h = backend(&x, |b| {
        b.expect_request();
        b.write(&sendfile_response(
            "big.bin",
            &[("Content-Type", "application/octet-stream")],
        ));
        b.echo_one();
        b.echo_one();
    });
    let path = x.root.join("big.bin");
    let mut c = Client::connect(x.p.client_addr());
    c.send(&req_bytes("GET", "/big", "HTTP/1.1", &[]));
    let hd = read_response_head(&mut c.conn).unwrap().unwrap();
    assert_eq!(hd.status, 200, "{hd:?}");
    assert_eq!(hd.header("content-length"), Some(len.to_string().as_str()));
    let mut local = fs::File::open(&path).unwrap();
    let mut want = Vec::new();
    let mut got_total = 0u64;
    let mut bad: Option<u64> = None;
    let started = Instant::now();
    let mut check = |bytes: &[u8]| {
        want.resize(bytes.len(), 0);
        local.read_exact(&mut want).unwrap();
        if bad.is_none() && want[..] != bytes[..] {
            bad = Some(got_total);
        }
        got_total += bytes.len() as u64;
    };
    let mut read = 0u64;
    let mut stalled = false;
    while read < len {
        let slow = read < (4 << 20);
        let max = if slow { 16 * 1024 } else { 1 << 20 };
        let n = c
            .conn
            .read_some((len - read).min(max) as usize, &mut check)
            .unwrap_or_else(|e| panic!("reading the body at {read}: {e}"));
        assert!(n > 0, "closed with {} bytes to go", len - read);
        read += n as u64;
        if slow {
            thread::sleep(Duration::from_millis(1));
        } else if !stalled {
            // Stop reading a while: the proxy must wait for writability.
            stalled = true;
            thread::sleep(Duration::from_millis(300));
        }
    }
    assert_eq!(bad, None, "the body differs from the file at this offset");
    next_request_echoed(&mut c, "big");
    let peak = x.p.peak_rss_kb();
    eprintln!(
        "X-Sendfile {len} bytes in {:?}, proxy peak RSS {peak} KiB",
        started.elapsed()
    );
    assert!(
        peak < 32 * 1024,
        "peak RSS {peak} KiB for a {len}-byte X-Sendfile"
    );
    let mut c2 = Client::connect(x.p.client_addr());
    next_request_echoed(&mut c2, "big, new connection");
    join_within(h, JOIN, "backend");
}

#[test]
fn client_asking_close_gets_the_file_then_the_close() {
    let x = xsite("", |root| {
        put(root, "small.txt", b"small file");
    });
    let h = backend(&x, |b| {
        let r = b.expect_request();
        assert_eq!(r.target, "/close");
        b.write(&sendfile_response("small.txt", &[]));
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    let r = send(&mut c, "GET", "/close", &[("Connection", "close")]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_sent_file(&r, b"small file", "Connection: close");
    assert!(r.says_close(), "{r:?}");
    assert!(c.is_closed(Duration::from_secs(3)));
    let mut c = Client::connect(x.p.client_addr());
    next_request_echoed(&mut c, "after close");
    join_within(h, JOIN, "backend");
}

/// docs/failures.md: a client that disconnects after its
/// request was forwarded leaves the backend connection pooled. Here the
/// backend's whole response (head and its 20-byte body) was read long
/// before the client leaves in the middle of the file.
#[test]
fn client_leaving_mid_file_keeps_the_backend_pooled() {
    let len: u64 = 64 << 20;
    let x = xsite_top("timeout: 2", "", |root| {
        let f = fs::File::create(root.join("big.bin")).unwrap();
        f.set_len(len).unwrap();
    });
    let h = backend(&x, |b| {
        b.expect_request();
        b.write(&sendfile_response("big.bin", &[]));
        b.echo_one();
    });
    let mut c = Client::connect(x.p.client_addr());
    c.send(&req_bytes("GET", "/leave", "HTTP/1.1", &[]));
    let hd = read_response_head(&mut c.conn).unwrap().unwrap();
    assert_eq!(hd.status, 200, "{hd:?}");
    let mut got = 0u64;
    while got < (1 << 20) {
        let n = c.conn.read_some(64 * 1024, &mut |_: &[u8]| {}).unwrap();
        assert!(n > 0);
        got += n as u64;
    }
    drop(c);
    let mut c = Client::connect(x.p.client_addr());
    next_request_echoed(&mut c, "after the client left");
    join_within(h, JOIN, "backend");
}
