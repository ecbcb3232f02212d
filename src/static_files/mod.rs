//! Static files: finding a request's file under a docroot (or an X-Sendfile
//! path under a sendfileroot) safely, and planning the response head.
//!
//! INTERFACE CONTRACT (the reactor codes against exactly these items):
//! - `StaticRoot::new(root, staticmask, cache_directory, cache_extensions)`
//! - `StaticRoot::lookup(raw_path) -> Option<FoundFile>`  (docroot requests)
//! - `StaticRoot::lookup_sendfile(value) -> Option<FoundFile>`  (X-Sendfile)
//! - `plan(&FoundFile, &Conditions, is_head) -> Plan`
//! - `write_head(&FoundFile, &Plan, connection, out: &mut [u8]) -> Option<usize>`
//! - `write_entity_headers(&FoundFile, &Plan, out: &mut [u8]) -> Option<usize>`
//!
//! One request, end to end: the reactor calls `lookup` with the target's
//! path (query stripped, still percent-encoded); `None` means "ask a
//! backend". With a file, `plan` decides 200/206/304/416 from the request's
//! conditional and range headers; `write_head` renders the head into a
//! buffer of [`HEAD_MAX`] bytes; the reactor then `sendfile(2)`s
//! `plan.body` (offset, length) from `file`, if any. For X-Sendfile the
//! backend's head is kept and `write_entity_headers` supplies the lines that
//! describe the file.
//!
//! Where each concern lives:
//! - `resolve`: decoding, containment (no `..`, no symlink escape),
//!   `staticmask`, `index.html`, the Rails page cache. No caching at all, so
//!   a changed or deleted file is seen on the next request.
//! - `mime`: the extension → Content-Type table.
//! - `httpdate`: IMF-fixdate formatting, the three HTTP-date forms parsed.
//! - `conditional`: ETag, If-None-Match, If-Modified-Since, Range, If-Range.
//! - `head`: the bytes of the head.
//!
//! Every function here is total over arbitrary input bytes: hostile paths
//! and header values give `None` or a plain 200, never a panic.

use std::fs::File;
use std::path::Path;
use std::time::SystemTime;

mod conditional;
mod head;
pub(crate) mod httpdate;
mod mime;
mod resolve;
#[cfg(test)]
mod testdir;

pub use head::{CONNECTION_MAX, ENTITY_HEADERS_MAX, HEAD_MAX};

/// A docroot or sendfileroot.
#[derive(Debug, Clone)]
pub struct StaticRoot {
    resolver: resolve::Resolver,
}

/// An open regular file found under a root.
#[derive(Debug)]
pub struct FoundFile {
    pub file: File,
    pub len: u64,
    pub mtime: SystemTime,
    pub content_type: &'static str,
}

/// The request headers that decide a static response.
#[derive(Debug, Default, Clone, Copy)]
pub struct Conditions<'a> {
    pub if_none_match: Option<&'a [u8]>,
    pub if_modified_since: Option<&'a [u8]>,
    pub range: Option<&'a [u8]>,
    pub if_range: Option<&'a [u8]>,
}

/// What to send: the status and which bytes of the file (none for 304/416
/// and HEAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub status: u16,
    /// (offset, length) of the file bytes in the body. `None` when there are
    /// no bytes to send: HEAD, 304, 416, or an empty file.
    pub body: Option<(u64, u64)>,
    /// Content-Length announced (the range length; for HEAD what GET would
    /// send; 0 for 416; not written for 304).
    pub content_length: u64,
    /// For 206: the range served as (offset, length), the same shape as
    /// `body` (`Content-Range` shows offset..=offset+length-1); for 416: None
    /// and `unsatisfied` true.
    pub range: Option<(u64, u64)>,
    pub unsatisfied: bool,
}

impl StaticRoot {
    /// Checks a root for serving: `root` must be an existing directory (it is
    /// canonicalized once, here), `staticmask` a valid regular expression.
    /// `cache_directory` (relative to the root, `..` refused) turns on the
    /// Rails page cache, trying `cache_extensions` (`html` or `.html`) in
    /// order. Errors are sentences naming the path or pattern at fault.
    pub fn new(
        root: &Path,
        staticmask: Option<&str>,
        cache_directory: Option<&str>,
        cache_extensions: &[String],
    ) -> Result<StaticRoot, String> {
        resolve::Resolver::new(root, staticmask, cache_directory, cache_extensions)
            .map(|resolver| StaticRoot { resolver })
    }

    /// The regular file a request path names (the target before `?`, still
    /// percent-encoded), or `None` when the request belongs to a backend: not
    /// found, not a regular file, matched by `staticmask`, or unsafe.
    ///
    /// Order: `root/P` (a directory → its `index.html`), then with a page
    /// cache `root/cache_directory/P` (likewise) and
    /// `root/cache_directory/P.<ext>` for each extension.
    pub fn lookup(&self, raw_path: &[u8]) -> Option<FoundFile> {
        self.resolver.lookup(raw_path)
    }

    /// The regular file an `X-Sendfile` header names: relative to the root
    /// (a leading `/` allowed), taken literally (it is a header value, not a
    /// URL, so no percent-decoding), contained like `lookup`; no staticmask,
    /// index.html or page cache.
    pub fn lookup_sendfile(&self, value: &[u8]) -> Option<FoundFile> {
        self.resolver.lookup_sendfile(value)
    }
}

/// Decides the response to a GET (or, with `is_head`, HEAD) for `f`.
/// See `conditional` for the rules; a 304 wins over a Range.
pub fn plan(f: &FoundFile, c: &Conditions<'_>, is_head: bool) -> Plan {
    conditional::plan_for(f.len, f.mtime, c, is_head)
}

/// Writes the whole response head (status line through the blank line),
/// with `connection` (e.g. `""` or `"Connection: close\r\n"`) copied
/// verbatim before the blank line. Returns the length, or `None` when `out`
/// is too small; [`HEAD_MAX`] bytes suffice when `connection` is at most
/// [`CONNECTION_MAX`] bytes.
pub fn write_head(f: &FoundFile, p: &Plan, connection: &str, out: &mut [u8]) -> Option<usize> {
    head::write_head(&entity(f), p, connection, out)
}

/// Writes the header lines that describe the file (Content-Length except
/// for 304, Content-Range for 206/416, ETag, Last-Modified, Accept-Ranges)
/// for an X-Sendfile response that keeps the backend's other headers.
/// Returns the length, or `None` when `out` is smaller than needed
/// ([`ENTITY_HEADERS_MAX`] always suffices).
pub fn write_entity_headers(f: &FoundFile, p: &Plan, out: &mut [u8]) -> Option<usize> {
    head::write_entity_headers(&entity(f), p, out)
}

fn entity(f: &FoundFile) -> head::Entity {
    head::Entity {
        content_type: f.content_type,
        len: f.len,
        mtime: f.mtime,
    }
}

#[cfg(test)]
mod tests {
    use super::testdir::TempDir;
    use super::*;
    use std::fs::FileTimes;
    use std::time::{Duration, UNIX_EPOCH};

    /// A small deterministic generator, so a failure reproduces.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// Bytes biased towards the ones that matter to paths and headers.
        fn bytes(&mut self, max_len: usize) -> Vec<u8> {
            const INTERESTING: &[u8] = b"/%.\\\0-=,\"W*bytes0123456789aAfF2eE5cC ";
            let len = self.below(max_len + 1);
            (0..len)
                .map(|_| {
                    if self.below(4) == 0 {
                        self.next() as u8
                    } else {
                        INTERESTING[self.below(INTERESTING.len())]
                    }
                })
                .collect()
        }
    }

    #[test]
    fn a_small_file_end_to_end() {
        let dir = TempDir::new();
        let path = dir.write("hello.txt", "hello");
        let mtime = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let file = File::options().write(true).open(&path).unwrap();
        file.set_times(FileTimes::new().set_modified(mtime))
            .unwrap();
        drop(file);

        let root = StaticRoot::new(dir.path(), None, None, &[]).unwrap();
        let f = root.lookup(b"/hello.txt").unwrap();
        assert_eq!(
            (f.len, f.mtime, f.content_type),
            (5, mtime, "text/plain; charset=utf-8")
        );

        let p = plan(&f, &Conditions::default(), false);
        assert_eq!((p.status, p.body), (200, Some((0, 5))));
        let mut out = [0u8; HEAD_MAX];
        let n = write_head(&f, &p, "", &mut out).unwrap();
        assert_eq!(
            std::str::from_utf8(&out[..n]).unwrap(),
            "HTTP/1.1 200 OK\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 5\r\n\
             ETag: \"2ebc98a1-0-5\"\r\n\
             Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Accept-Ranges: bytes\r\n\
             \r\n"
        );

        // The validators it sent make the next request a 304 …
        let c = Conditions {
            if_none_match: Some(b"\"2ebc98a1-0-5\""),
            ..Conditions::default()
        };
        assert_eq!(plan(&f, &c, false).status, 304);
        let c = Conditions {
            if_modified_since: Some(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            ..Conditions::default()
        };
        assert_eq!(plan(&f, &c, false).status, 304);
        // … and a range of it a 206.
        let c = Conditions {
            range: Some(b"bytes=-2"),
            if_range: Some(b"\"2ebc98a1-0-5\""),
            ..Conditions::default()
        };
        let p = plan(&f, &c, false);
        assert_eq!((p.status, p.body), (206, Some((3, 2))));
        let n = write_entity_headers(&f, &p, &mut out).unwrap();
        assert!(out[..n].starts_with(b"Content-Length: 2\r\nContent-Range: bytes 3-4/5\r\n"));
    }

    #[test]
    fn no_input_bytes_make_it_panic() {
        let dir = TempDir::new();
        dir.write("index.html", "<p>hi</p>");
        dir.write("a/b.css", "b{}");
        dir.write("public/page.html", "page");
        let exts = ["html".to_string()];
        let root = StaticRoot::new(dir.path(), Some(r"\.yml$"), Some("public"), &exts).unwrap();
        let f = root.lookup(b"/index.html").unwrap();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut out = [0u8; HEAD_MAX];

        for _ in 0..20_000 {
            let mut path = rng.bytes(24);
            if rng.below(2) == 0 {
                path.insert(0, b'/');
            }
            if let Some(found) = root.lookup(&path) {
                assert!(found.len <= 9);
            }
            if let Some(found) = root.lookup_sendfile(&path) {
                assert!(found.len <= 9);
            }

            let values: Vec<Vec<u8>> = (0..4).map(|_| rng.bytes(40)).collect();
            let pick = |i: usize, on: bool| on.then_some(values[i].as_slice());
            let mask = rng.next();
            let c = Conditions {
                if_none_match: pick(0, mask & 1 != 0),
                if_modified_since: pick(1, mask & 2 != 0),
                range: pick(2, mask & 4 != 0),
                if_range: pick(3, mask & 8 != 0),
            };
            let p = plan(&f, &c, mask & 16 != 0);
            assert!(matches!(p.status, 200 | 206 | 304 | 416));
            if let Some((offset, len)) = p.body {
                assert!(len > 0 && offset + len <= f.len);
            }
            let size = rng.below(HEAD_MAX + 1);
            let _ = write_head(&f, &p, "Connection: close\r\n", &mut out[..size]);
            let _ = write_entity_headers(&f, &p, &mut out[..size]);
            assert!(write_head(&f, &p, "Connection: close\r\n", &mut out).is_some());
        }
    }

    #[test]
    fn range_bytes_the_fuzzer_should_not_have_to_find() {
        let dir = TempDir::new();
        dir.write("f.bin", "0123456789");
        let root = StaticRoot::new(dir.path(), None, None, &[]).unwrap();
        let f = root.lookup(b"/f.bin").unwrap();
        assert_eq!(f.content_type, "application/octet-stream");
        for range in [
            &b"bytes=18446744073709551615-"[..],
            b"bytes=0-18446744073709551615",
            b"bytes=-18446744073709551615",
            b"bytes=18446744073709551616-18446744073709551617",
            b"bytes=\xff-\xff",
            b"=",
            b"bytes==",
        ] {
            let c = Conditions {
                range: Some(range),
                ..Conditions::default()
            };
            let p = plan(&f, &c, false);
            assert!(matches!(p.status, 200 | 206 | 416));
        }
    }
}
