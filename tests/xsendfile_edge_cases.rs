//! Edge cases of X-Sendfile answers (docs/static-files.md): conditional headers too
//! long to keep, HEAD with the 404 flag, bodiless backend statuses, and the
//! backend's own validators. Each of the first three once broke.
//!
//! Each site has one directory that is both `docroot` and `sendfileroot`,
//! so the same file can be fetched straight from the docroot (the proxy's
//! own conditional logic on the live request head) and through a scripted
//! backend's X-Sendfile answer (conditions saved in `SavedConditions`).

mod common;

use common::*;
use std::fs::{self, FileTimes};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, UNIX_EPOCH};

const HOST: &str = "app.test";
const JOIN: Duration = Duration::from_secs(30);
/// 2020-01-02 03:04:05 UTC.
const T0: u64 = 1_577_934_245;

struct Site {
    p: Proxy,
    #[allow(dead_code)] // removed on drop
    dir: TempDir,
}

/// `<tmp>/files` (docroot and sendfileroot) filled by `build`.
fn site(extra: &str, build: impl FnOnce(&Path)) -> Site {
    let dir = TempDir::new("xsendfile-edge");
    let root = dir.path.join("files");
    fs::create_dir_all(&root).unwrap();
    build(&root);
    let p = Proxy::start(&one_section(
        "",
        &format!(
            "docroot: {r}\nsendfileroot: {r}\n{extra}",
            r = root.display()
        ),
    ));
    Site { p, dir }
}

fn put_at_t0(root: &Path, rel: &str, contents: &[u8]) -> PathBuf {
    let p = root.join(rel);
    fs::write(&p, contents).unwrap();
    let f = fs::File::options().write(true).open(&p).unwrap();
    f.set_times(FileTimes::new().set_modified(UNIX_EPOCH + Duration::from_secs(T0)))
        .unwrap();
    p
}

static IDS: AtomicUsize = AtomicUsize::new(1);

fn backend(s: &Site, script: impl FnOnce(&mut Backend) + Send + 'static) -> thread::JoinHandle<()> {
    let mut b = Backend::connect(
        s.p.backend_addr(0),
        &id12("rv", IDS.fetch_add(1, Ordering::SeqCst)),
        "",
    );
    thread::spawn(move || script(&mut b))
}

fn req(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut s = format!("{method} {target} HTTP/1.1\r\nHost: {HOST}\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// `n` distinct stale strong ETags, comma-separated.
fn stale_tags(n: usize) -> String {
    (0..n)
        .map(|i| format!("\"stale-{i:02}-0123456789abcdef0123\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A backend that answers each of `n` requests with `X-Sendfile: value`
/// (and an empty body), then echoes one request.
fn sendfile_backend(s: &Site, value: &'static str, n: usize) -> thread::JoinHandle<()> {
    backend(s, move |b| {
        for _ in 0..n {
            b.expect_request();
            b.write(
                format!("HTTP/1.1 200 OK\r\nX-Sendfile: {value}\r\nContent-Length: 0\r\n\r\n")
                    .as_bytes(),
            );
        }
        b.echo_one();
    })
}

// ---------------------------------------------------------------------------
// BUG: SavedConditions drops headers that do not fit 256 bytes one by one,
// which changes the *meaning* of the ones it keeps (filesend.rs:123-135).
// ---------------------------------------------------------------------------

/// If-None-Match is present but does not match, so If-Modified-Since must be
/// ignored (RFC 9110 §13.1.3; conditional.rs rule 1): the answer is 200.
/// Through X-Sendfile the long If-None-Match is dropped, the short
/// If-Modified-Since kept, and the client gets a 304 for an entity it does
/// not have.
#[test]
fn xsendfile_long_if_none_match_is_dropped_and_if_modified_since_wrongly_gives_304() {
    let s = site("", |root| {
        put_at_t0(root, "f.txt", b"fresh contents");
    });
    let h = sendfile_backend(&s, "f.txt", 1);
    let inm = stale_tags(8); // > 256 bytes
    assert!(inm.len() > 256);
    let hs = [
        ("If-None-Match", inm.as_str()),
        ("If-Modified-Since", "Sun, 01 Jan 2023 00:00:00 GMT"),
    ];
    let mut c = Client::connect(s.p.client_addr());
    // Control: the docroot path evaluates the same head correctly.
    let r = c.request(&req("GET", "/f.txt", &hs));
    assert_eq!(r.status, 200, "docroot control: {r:?}");
    assert_eq!(r.body_str(), "fresh contents");
    // The same conditions through X-Sendfile.
    let r = c.request(&req("GET", "/download", &hs));
    assert_eq!(
        r.status, 200,
        "X-Sendfile: non-matching If-None-Match must make If-Modified-Since ignored: {r:?}"
    );
    assert_eq!(r.body_str(), "fresh contents");
    let _ = c.request(&req("GET", "/next", &[]));
    join_within(h, JOIN, "backend");
}

/// Range with an If-Range that does not match must be ignored (200, whole
/// file). When If-Range is the header that overflows the 256-byte store, the
/// Range is applied unconditionally: a 206 of an entity the client's other
/// parts do not belong to.
#[test]
fn xsendfile_if_range_dropped_when_it_overflows_gives_a_wrong_206() {
    let s = site("", |root| {
        put_at_t0(root, "r.bin", b"0123456789abcdef");
    });
    let h = sendfile_backend(&s, "r.bin", 1);
    let range = "bytes=0-3";
    let if_range = "\"stale-validator-00000000\"";
    // An If-None-Match (not matching) that leaves room for Range but not for If-Range.
    let mut inm = stale_tags(6);
    while inm.len() + range.len() + if_range.len() <= 256 {
        inm.push_str(", \"x\"");
    }
    assert!(inm.len() + range.len() <= 256);
    let hs = [
        ("If-None-Match", inm.as_str()),
        ("Range", range),
        ("If-Range", if_range),
    ];
    let mut c = Client::connect(s.p.client_addr());
    let r = c.request(&req("GET", "/r.bin", &hs));
    assert_eq!(r.status, 200, "docroot control: {r:?}");
    assert_eq!(r.body_str(), "0123456789abcdef");
    let r = c.request(&req("GET", "/download", &hs));
    assert_eq!(
        r.status, 200,
        "X-Sendfile: a non-matching If-Range must void the Range: {r:?}"
    );
    assert_eq!(r.body_str(), "0123456789abcdef");
    let _ = c.request(&req("GET", "/next", &[]));
    join_within(h, JOIN, "backend");
}

// ---------------------------------------------------------------------------
// BUG: the enable_sendfile_404 answer to a HEAD request carries a body
// (client.rs queue_not_found ignores is_head), so on a kept-alive connection
// the body is read as the start of the next response.
// ---------------------------------------------------------------------------

#[test]
fn xsendfile_404_to_head_has_no_body_and_next_response_is_clean() {
    let s = site("enable_sendfile_404: true", |_| {});
    let h = backend(&s, |b| {
        let r = b.expect_request();
        assert_eq!(r.method, "HEAD");
        // A HEAD response: headers only.
        b.write(b"HTTP/1.1 200 OK\r\nX-Sendfile: missing.txt\r\nContent-Length: 20\r\n\r\n");
        b.echo_one();
    });
    let mut c = Client::connect(s.p.client_addr());
    let r = c.request(&req("HEAD", "/gone", &[]));
    assert_eq!(r.status, 404, "{r:?}");
    assert!(!r.says_close(), "{r:?}");
    let sent = req("GET", "/next", &[]);
    c.send(&sent);
    match c.try_read_response(false) {
        Ok(r) => {
            assert_eq!(r.status, 200, "{r:?}");
            assert_eq!(
                r.body, sent,
                "the next response is the backend's echo: {r:?}"
            );
        }
        Err(e) => panic!(
            "the response after the HEAD 404 is corrupt (the 404 body leaked into it): {e:?}"
        ),
    }
    join_within(h, JOIN, "backend");
}

/// A backend's 204/304 has no body a file could stand in for: it passes
/// through unchanged, X-Sendfile header included.
#[test]
fn bodiless_backend_statuses_pass_through() {
    let s = site("", |root| {
        put_at_t0(root, "f.txt", b"file body");
    });
    let h = backend(&s, |b| {
        for status in ["204 No Content", "304 Not Modified"] {
            b.expect_request();
            b.write(format!("HTTP/1.1 {status}\r\nX-Sendfile: f.txt\r\n\r\n").as_bytes());
        }
    });
    let mut c = Client::connect(s.p.client_addr());
    for status in [204, 304] {
        let r = c.request(&req("GET", "/x", &[]));
        assert_eq!(r.status, status, "{r:?}");
        assert!(r.body.is_empty(), "{r:?}");
        assert_eq!(r.header("x-sendfile"), Some("f.txt"), "{r:?}");
    }
    join_within(h, JOIN, "backend");
}

/// The file's validators replace the backend's: one ETag, one Last-Modified.
#[test]
fn the_files_validators_replace_the_backends() {
    let s = site("", |root| {
        put_at_t0(root, "f.txt", b"file body");
    });
    let h = backend(&s, |b| {
        b.expect_request();
        b.write(
            b"HTTP/1.1 200 OK\r\nETag: \"backend\"\r\nLast-Modified: Mon, 01 Jan 2001 00:00:00 GMT\r\n\
Accept-Ranges: none\r\nX-Sendfile: f.txt\r\nContent-Length: 0\r\n\r\n",
        );
    });
    let mut c = Client::connect(s.p.client_addr());
    let r = c.request(&req("GET", "/x", &[]));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, b"file body");
    assert_eq!(r.headers_all("etag").len(), 1, "{r:?}");
    assert_ne!(r.header("etag"), Some("\"backend\""), "{r:?}");
    assert_eq!(r.headers_all("last-modified").len(), 1, "{r:?}");
    assert_eq!(r.headers_all("accept-ranges"), vec!["bytes"], "{r:?}");
    join_within(h, JOIN, "backend");
}
