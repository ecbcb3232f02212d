//! Finding a request's file under a root: percent-decoding, refusing
//! anything that could leave the root, `staticmask`, directory `index.html`
//! and the Rails page cache; and the same containment for X-Sendfile paths.
//!
//! Invariants:
//! - A path is refused before touching the filesystem when it is not
//!   absolute, has a bad `%` escape, a NUL byte, a backslash (raw or
//!   encoded), an encoded slash, or a `..` segment (raw or encoded).
//! - Every candidate is canonicalized (all symlinks resolved) and must lie
//!   inside the canonical root by *path components* (`Path::starts_with`, so
//!   `/srv/www-evil` is not inside `/srv/www`). Symlinks that stay inside the
//!   root work; ones that lead out are refused.
//! - The canonical path is then opened with `O_NOFOLLOW` (so its last
//!   component cannot have become a symlink meanwhile) and `O_NONBLOCK` (so a
//!   FIFO can never stall the reactor); the type check uses `fstat` on the
//!   open descriptor, so the file served is the one that was checked. Only
//!   regular files are returned. (Swapping an inner directory for a symlink
//!   between the two steps needs write access to the docroot; that is out
//!   of scope.)
//! - Where the kernel has `openat2(2)`, a candidate is opened in one call
//!   relative to the root's descriptor with `RESOLVE_BENEATH`: the kernel
//!   itself refuses any resolution (`..`, a symlink) that would leave the
//!   root. Only when it refuses (an absolute symlink, which may still point
//!   inside) or lacks `openat2` is the canonicalizing path above taken, with
//!   the same answer.
//! - Nothing is cached: each lookup sees the filesystem as it is now, so a
//!   changed, replaced or deleted file is noticed at once.
//! - `staticmask` is matched against the decoded path *after* empty and `.`
//!   segments are removed (`/./secret.yml` and `//secret.yml` are checked as
//!   `/secret.yml`), so it cannot be sidestepped by respelling a path.

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use regex_lite::Regex;

use super::{mime, FoundFile};

/// A docroot or sendfileroot with its lookup rules, checked at startup.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// Canonical, and a directory when checked.
    root: PathBuf,
    /// The root, opened once, for `openat2` lookups beneath it.
    root_fd: Option<Arc<OwnedFd>>,
    staticmask: Option<Regex>,
    /// Relative to `root`, without `..`; `None` turns the page cache off.
    cache_directory: Option<PathBuf>,
    /// Without a leading dot, in the order they are tried.
    cache_extensions: Vec<OsString>,
}

impl Resolver {
    pub fn new(
        root: &Path,
        staticmask: Option<&str>,
        cache_directory: Option<&str>,
        cache_extensions: &[String],
    ) -> Result<Resolver, String> {
        let canonical = fs::canonicalize(root)
            .map_err(|e| format!("cannot serve files from {}: {e}", root.display()))?;
        let meta = fs::metadata(&canonical)
            .map_err(|e| format!("cannot serve files from {}: {e}", root.display()))?;
        if !meta.is_dir() {
            return Err(format!(
                "cannot serve files from {}: not a directory",
                root.display()
            ));
        }
        let staticmask = staticmask
            .map(|p| {
                Regex::new(p)
                    .map_err(|e| format!("staticmask {p:?} is not a valid regular expression: {e}"))
            })
            .transpose()?;
        let cache_directory = cache_directory
            .map(|d| page_cache_dir(d, root))
            .transpose()?;
        let cache_extensions = cache_extensions
            .iter()
            .map(|e| page_cache_extension(e))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
            .collect();
        let root_fd = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY)
            .open(&canonical)
            .ok()
            .map(|f| Arc::new(OwnedFd::from(f)));
        Ok(Resolver {
            root_fd,
            root: canonical,
            staticmask,
            cache_directory,
            cache_extensions,
        })
    }

    /// The file for a request target's path (before `?`, still
    /// percent-encoded), or `None` when the request belongs to a backend.
    pub fn lookup(&self, raw_path: &[u8]) -> Option<FoundFile> {
        let decoded = percent_decode(raw_path)?;
        let path = RequestPath::parse(&decoded)?;
        if let Some(mask) = &self.staticmask {
            if mask.is_match(&String::from_utf8_lossy(&path.normalized)) {
                return None;
            }
        }
        if let Some(f) = self.file_or_index(&self.root.join(&path.relative), path.dir_only) {
            return Some(f);
        }
        let cache = self.root.join(self.cache_directory.as_ref()?);
        let cached = cache.join(&path.relative);
        if let Some(f) = self.file_or_index(&cached, path.dir_only) {
            return Some(f);
        }
        let name = path.relative.file_name().filter(|_| !path.dir_only)?;
        self.cache_extensions.iter().find_map(|ext| {
            let mut with_ext = name.to_os_string();
            with_ext.push(".");
            with_ext.push(ext);
            self.open_under(&cached.with_file_name(with_ext)).file()
        })
    }

    /// The file an `X-Sendfile` value names: a path relative to the root (a
    /// leading `/` allowed), taken literally (no percent-decoding), with the
    /// same containment rules; no staticmask, index.html or page cache.
    pub fn lookup_sendfile(&self, value: &[u8]) -> Option<FoundFile> {
        let value = value.trim_ascii();
        if value.contains(&0) || value.contains(&b'\\') {
            return None;
        }
        let relative = value.strip_prefix(b"/").unwrap_or(value);
        let path = RequestPath::from_relative(relative)?;
        if path.relative.as_os_str().is_empty() || path.dir_only {
            return None;
        }
        self.open_under(&self.root.join(&path.relative)).file()
    }

    /// A regular file at `candidate`, or the `index.html` of a directory
    /// there. `dir_only` (the request ended in `/`) refuses a plain file.
    fn file_or_index(&self, candidate: &Path, dir_only: bool) -> Option<FoundFile> {
        match self.open_under(candidate) {
            Candidate::File(f) if !dir_only => Some(f),
            Candidate::Dir(dir) => self.open_under(&dir.join("index.html")).file(),
            _ => None,
        }
    }

    fn open_under(&self, candidate: &Path) -> Candidate {
        match self.open_beneath(candidate) {
            Beneath::Opened(file) => {
                return self.classify(candidate, candidate.to_path_buf(), file)
            }
            Beneath::Missing => return Candidate::Nothing,
            Beneath::Refused => {}
        }
        let Ok(canonical) = fs::canonicalize(candidate) else {
            return Candidate::Nothing;
        };
        if !canonical.starts_with(&self.root) {
            return Candidate::Nothing;
        }
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(&canonical)
        else {
            return Candidate::Nothing;
        };
        self.classify(candidate, canonical, file)
    }

    /// One `openat2` beneath the root. `Refused`: the kernel would not (or
    /// cannot) resolve it beneath the root; the caller decides the slow way.
    fn open_beneath(&self, candidate: &Path) -> Beneath {
        static UNAVAILABLE: AtomicBool = AtomicBool::new(false);
        let Some(root_fd) = &self.root_fd else {
            return Beneath::Refused;
        };
        if UNAVAILABLE.load(Ordering::Relaxed) {
            return Beneath::Refused;
        }
        let Ok(relative) = candidate.strip_prefix(&self.root) else {
            return Beneath::Refused;
        };
        let relative = if relative.as_os_str().is_empty() {
            Path::new(".")
        } else {
            relative
        };
        let Ok(c_path) = CString::new(relative.as_os_str().as_bytes()) else {
            return Beneath::Missing;
        };
        // SAFETY: `open_how` is plain data; every field is set below.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: valid descriptor, NUL-terminated path, and `how` with its size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root_fd.as_raw_fd(),
                c_path.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just gave us this descriptor; we own it.
            return Beneath::Opened(fs::File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) }));
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::EACCES) => {
                Beneath::Missing
            }
            Some(libc::ENOSYS) | Some(libc::EPERM) => {
                UNAVAILABLE.store(true, Ordering::Relaxed);
                Beneath::Refused
            }
            _ => Beneath::Refused, // EXDEV and the like: decide by canonicalizing
        }
    }

    /// A regular file or a directory; `canonical` names it for a directory's
    /// index lookup.
    fn classify(&self, candidate: &Path, canonical: PathBuf, file: fs::File) -> Candidate {
        let Ok(meta) = file.metadata() else {
            return Candidate::Nothing;
        };
        if meta.is_dir() {
            return Candidate::Dir(canonical);
        }
        if !meta.is_file() {
            return Candidate::Nothing;
        }
        // The type follows the name asked for, not a symlink's target.
        let name = candidate.file_name().map_or(&[][..], OsStr::as_bytes);
        Candidate::File(FoundFile {
            len: meta.len(),
            mtime: meta.modified().unwrap_or(UNIX_EPOCH),
            content_type: mime::content_type(name),
            file,
        })
    }
}

enum Beneath {
    Opened(fs::File),
    Missing,
    Refused,
}

enum Candidate {
    File(FoundFile),
    /// Canonical path of a directory inside the root.
    Dir(PathBuf),
    Nothing,
}

impl Candidate {
    fn file(self) -> Option<FoundFile> {
        match self {
            Candidate::File(f) => Some(f),
            _ => None,
        }
    }
}

/// A decoded absolute path, split into safe segments.
struct RequestPath {
    /// Segments joined, without empty or `.` segments; empty for `/`.
    relative: PathBuf,
    /// `/` + the segments, for staticmask (a trailing `/` kept).
    normalized: Vec<u8>,
    /// The path ended in `/`: only a directory (its index.html) will do.
    dir_only: bool,
}

impl RequestPath {
    /// Refuses paths that are not absolute or have a `..` segment.
    fn parse(decoded: &[u8]) -> Option<RequestPath> {
        RequestPath::from_relative(decoded.strip_prefix(b"/")?)
    }

    /// The part after the leading `/`; refuses a `..` segment.
    fn from_relative(rest: &[u8]) -> Option<RequestPath> {
        let mut relative = PathBuf::new();
        let mut normalized = Vec::with_capacity(rest.len() + 1);
        for segment in rest.split(|&b| b == b'/') {
            match segment {
                b"" | b"." => {}
                b".." => return None,
                _ => {
                    relative.push(OsStr::from_bytes(segment));
                    normalized.push(b'/');
                    normalized.extend_from_slice(segment);
                }
            }
        }
        let dir_only = rest.ends_with(b"/") && !normalized.is_empty();
        if normalized.is_empty() || dir_only {
            normalized.push(b'/');
        }
        Some(RequestPath {
            relative,
            normalized,
            dir_only,
        })
    }
}

/// Decodes `%XX` escapes, refusing what could change the path's structure or
/// reach the OS as something else: bad escapes, NUL, backslashes, and
/// encoded slashes (a `%2F` inside a segment has no safe meaning on disk).
fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = match raw[i] {
            b'%' => {
                let hi = hex_value(*raw.get(i + 1)?)?;
                let lo = hex_value(*raw.get(i + 2)?)?;
                i += 3;
                match hi << 4 | lo {
                    b'/' => return None,
                    decoded => decoded,
                }
            }
            other => {
                i += 1;
                other
            }
        };
        if b == 0 || b == b'\\' {
            return None;
        }
        out.push(b);
    }
    Some(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `cache_directory` as a path relative to the root (a leading `/` means the
/// root, as it does in a URL).
fn page_cache_dir(dir: &str, root: &Path) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for segment in dir.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "cache_directory {dir:?} must stay inside {}",
                    root.display()
                ))
            }
            s if s.contains(['\0', '\\']) => {
                return Err(format!("cache_directory {dir:?} has a NUL or backslash"))
            }
            s => out.push(s),
        }
    }
    Ok(out)
}

/// One `cache_extensions` entry: `html` or `.html`; blank entries skipped.
fn page_cache_extension(ext: &str) -> Result<Option<OsString>, String> {
    let trimmed = ext.trim();
    let bare = trimmed.strip_prefix('.').unwrap_or(trimmed);
    if bare.contains(['/', '\\', '\0']) {
        return Err(format!(
            "cache_extensions entry {ext:?} must be a file extension such as \"html\""
        ));
    }
    Ok((!bare.is_empty()).then(|| OsString::from(bare)))
}

#[cfg(test)]
mod tests {
    use super::super::testdir::TempDir;
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn contents(found: Option<FoundFile>) -> Option<String> {
        let mut s = String::new();
        found?.file.read_to_string(&mut s).unwrap();
        Some(s)
    }

    fn plain(dir: &TempDir) -> Resolver {
        Resolver::new(dir.path(), None, None, &[]).unwrap()
    }

    #[test]
    fn decoding_refuses_what_could_change_the_path() {
        assert_eq!(percent_decode(b"/a%20b%41").unwrap(), b"/a bA");
        assert_eq!(percent_decode(b"/%e2%82%ac").unwrap(), "/€".as_bytes());
        for bad in [
            &b"/a%2Fb"[..],
            b"/a%2fb",
            b"/a%5Cb",
            b"/a%5cb",
            b"/a\\b",
            b"/a%00",
            b"/a\0",
            b"/%",
            b"/%4",
            b"/%zz",
            b"/%+1",
        ] {
            assert_eq!(
                percent_decode(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn request_paths_drop_empty_and_dot_segments_and_refuse_dotdot() {
        let p = RequestPath::parse(b"//a/./b//c").unwrap();
        assert_eq!(p.relative, Path::new("a/b/c"));
        assert_eq!(p.normalized, b"/a/b/c");
        assert!(!p.dir_only);
        let p = RequestPath::parse(b"/a/b/").unwrap();
        assert_eq!((p.normalized.as_slice(), p.dir_only), (&b"/a/b/"[..], true));
        let p = RequestPath::parse(b"/").unwrap();
        assert_eq!((p.normalized.as_slice(), p.dir_only), (&b"/"[..], false));
        assert!(RequestPath::parse(b"/a/../b").is_none());
        assert!(RequestPath::parse(b"/..").is_none());
        assert!(RequestPath::parse(b"a/b").is_none());
        assert!(RequestPath::parse(b"").is_none());
        assert!(RequestPath::parse(b"/a/..b/c..").is_some());
    }

    #[test]
    fn serves_a_regular_file_with_its_length_and_type() {
        let dir = TempDir::new();
        dir.write("css/site.css", "body{}");
        let found = plain(&dir).lookup(b"/css/site.css").unwrap();
        assert_eq!(found.len, 6);
        assert_eq!(found.content_type, "text/css; charset=utf-8");
        assert!(found.mtime > UNIX_EPOCH);
        assert_eq!(
            contents(plain(&dir).lookup(b"/css/%73ite.css")).unwrap(),
            "body{}"
        );
        assert_eq!(
            contents(plain(&dir).lookup(b"//css/./site.css")).unwrap(),
            "body{}"
        );
        assert!(plain(&dir).lookup(b"/css/missing.css").is_none());
        assert!(plain(&dir).lookup(b"/css/site.css/").is_none());
    }

    #[test]
    fn names_needing_escapes_are_found_decoded() {
        let dir = TempDir::new();
        dir.write("my file €.txt", "x");
        assert!(plain(&dir).lookup(b"/my%20file%20%E2%82%AC.txt").is_some());
    }

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        let outer = TempDir::new();
        outer.write("secret.txt", "secret");
        outer.write("www/index.html", "hi");
        outer.write("www-evil/x.txt", "evil");
        let r = Resolver::new(&outer.path().join("www"), None, None, &[]).unwrap();
        for attack in [
            &b"/../secret.txt"[..],
            b"/%2e%2e/secret.txt",
            b"/%2E%2E/secret.txt",
            b"/.%2e/secret.txt",
            b"/x/../../secret.txt",
            b"/..%2fsecret.txt",
            b"/..%2Fsecret.txt",
            b"/%2F..%2Fsecret.txt",
            b"/..\\secret.txt",
            b"/..%5csecret.txt",
            b"/secret.txt%00.html",
            b"/index.html\0",
            b"/../www-evil/x.txt",
            b"../secret.txt",
            b"secret.txt",
            b"",
        ] {
            assert!(
                r.lookup(attack).is_none(),
                "{}",
                String::from_utf8_lossy(attack)
            );
        }
        assert!(r.lookup(b"/index.html").is_some());
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused_and_inside_it_followed() {
        let outer = TempDir::new();
        outer.write("secret.txt", "secret");
        outer.write("outside/a.txt", "a");
        outer.write("www/real/b.txt", "inside");
        let www = outer.path().join("www");
        symlink(outer.path().join("secret.txt"), www.join("leak.txt")).unwrap();
        symlink(outer.path().join("outside"), www.join("leakdir")).unwrap();
        symlink("../secret.txt", www.join("relleak.txt")).unwrap();
        symlink("real/b.txt", www.join("alias.txt")).unwrap();
        symlink(www.join("real"), www.join("aliasdir")).unwrap();
        // A root that is itself reached through a symlink still works.
        symlink(&www, outer.path().join("www-link")).unwrap();
        let r = Resolver::new(&outer.path().join("www-link"), None, None, &[]).unwrap();

        assert!(r.lookup(b"/leak.txt").is_none());
        assert!(r.lookup(b"/relleak.txt").is_none());
        assert!(r.lookup(b"/leakdir/a.txt").is_none());
        assert_eq!(contents(r.lookup(b"/alias.txt")).unwrap(), "inside");
        assert_eq!(contents(r.lookup(b"/aliasdir/b.txt")).unwrap(), "inside");
        assert!(r.lookup_sendfile(b"leak.txt").is_none());
        assert!(r.lookup_sendfile(b"alias.txt").is_some());
    }

    #[test]
    fn only_regular_files_are_served() {
        let dir = TempDir::new();
        dir.write("sub/x.txt", "x");
        assert!(plain(&dir).lookup(b"/sub").is_none()); // no index.html
        let fifo = dir.path().join("pipe");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(plain(&dir).lookup(b"/pipe").is_none()); // and does not block
        assert!(plain(&dir).lookup_sendfile(b"pipe").is_none());
    }

    #[test]
    fn a_directory_serves_its_index_html() {
        let dir = TempDir::new();
        dir.write("index.html", "root");
        dir.write("docs/index.html", "docs");
        let r = plain(&dir);
        assert_eq!(contents(r.lookup(b"/")).unwrap(), "root");
        assert_eq!(contents(r.lookup(b"/docs/")).unwrap(), "docs");
        assert_eq!(contents(r.lookup(b"/docs")).unwrap(), "docs");
        let found = r.lookup(b"/docs/").unwrap();
        assert_eq!(found.content_type, "text/html; charset=utf-8");
    }

    #[test]
    fn staticmask_sends_matching_paths_to_the_backends() {
        let dir = TempDir::new();
        dir.write("secret.yml", "k: v");
        dir.write("config/db.yml", "k: v");
        dir.write("ok.txt", "ok");
        dir.write("admin/index.html", "admin");
        let r = Resolver::new(dir.path(), Some(r"\.yml$|^/admin/"), None, &[]).unwrap();
        for masked in [
            &b"/secret.yml"[..],
            b"/secret%2Eyml",
            b"//secret.yml",
            b"/./secret.yml",
            b"/config/db.yml",
            b"/admin/",
        ] {
            assert!(
                r.lookup(masked).is_none(),
                "{}",
                String::from_utf8_lossy(masked)
            );
        }
        assert!(r.lookup(b"/ok.txt").is_some());
        assert!(r.lookup(b"/admin").is_some()); // the mask says /admin/
                                                // Not applied to X-Sendfile, which the backend chose.
        assert!(r.lookup_sendfile(b"secret.yml").is_some());
    }

    #[test]
    fn page_cache_is_tried_in_order() {
        let dir = TempDir::new();
        dir.write("both.html", "root-file");
        dir.write("public/both.html", "cache-file");
        dir.write("public/page", "cache-exact");
        dir.write("public/page.html", "cache-html");
        dir.write("public/only.htm", "cache-htm");
        dir.write("public/only.html", "cache-only-html");
        dir.write("public/index.html", "cache-index");
        dir.write("public/blog/index.html", "blog-index");
        let exts = ["html".to_string(), ".htm".to_string()];
        let r = Resolver::new(dir.path(), None, Some("public"), &exts).unwrap();
        assert_eq!(contents(r.lookup(b"/both.html")).unwrap(), "root-file");
        assert_eq!(contents(r.lookup(b"/page")).unwrap(), "cache-exact");
        assert_eq!(contents(r.lookup(b"/only")).unwrap(), "cache-only-html");
        assert_eq!(contents(r.lookup(b"/")).unwrap(), "cache-index");
        assert_eq!(contents(r.lookup(b"/blog/")).unwrap(), "blog-index");
        assert!(r.lookup(b"/missing").is_none());
        assert!(r.lookup(b"/page/").is_none());
        let page = r.lookup(b"/only").unwrap();
        assert_eq!(page.content_type, "text/html; charset=utf-8");

        // Without the exact file, /page finds public/page.html.
        std::fs::remove_file(dir.path().join("public/page")).unwrap();
        assert_eq!(contents(r.lookup(b"/page")).unwrap(), "cache-html");
        // Extensions in order: html before htm.
        std::fs::remove_file(dir.path().join("public/only.html")).unwrap();
        assert_eq!(contents(r.lookup(b"/only")).unwrap(), "cache-htm");
        // A root index.html wins over the cache's.
        dir.write("index.html", "root-index");
        assert_eq!(contents(r.lookup(b"/")).unwrap(), "root-index");

        // No cache_directory: no page-cache lookups at all.
        let r = Resolver::new(dir.path(), None, None, &exts).unwrap();
        assert!(r.lookup(b"/page").is_none());
    }

    #[test]
    fn the_page_cache_cannot_be_used_to_escape() {
        let outer = TempDir::new();
        outer.write("secret.html", "secret");
        outer.write("www/public/x.html", "x");
        let www = outer.path().join("www");
        let exts = ["html".to_string()];
        let r = Resolver::new(&www, None, Some("/public/"), &exts).unwrap();
        assert!(r.lookup(b"/x").is_some());
        symlink(outer.path().join("secret.html"), www.join("public/s.html")).unwrap();
        assert!(r.lookup(b"/s").is_none());
        assert!(Resolver::new(&www, None, Some("../"), &exts).is_err());
        assert!(Resolver::new(&www, None, Some("p"), &["a/b".to_string()]).is_err());
    }

    #[test]
    fn sendfile_paths_are_literal_and_contained() {
        let outer = TempDir::new();
        outer.write("secret.txt", "secret");
        outer.write("files/report.pdf", "%PDF");
        outer.write("files/100%25.txt", "literal");
        let r = Resolver::new(&outer.path().join("files"), None, None, &[]).unwrap();
        let found = r.lookup_sendfile(b"/report.pdf").unwrap();
        assert_eq!(found.content_type, "application/pdf");
        assert!(r.lookup_sendfile(b"report.pdf").is_some());
        assert!(r.lookup_sendfile(b"  report.pdf \t").is_some());
        assert!(r.lookup_sendfile(b"100%25.txt").is_some());
        for bad in [
            &b"../secret.txt"[..],
            b"/../secret.txt",
            b"%2e%2e/secret.txt",
            b"..\\secret.txt",
            b"report.pdf\0",
            b"",
            b"/",
            b".",
        ] {
            assert!(
                r.lookup_sendfile(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_changed_or_deleted_file_is_seen_at_once() {
        let dir = TempDir::new();
        dir.write("a.txt", "one");
        let r = plain(&dir);
        assert_eq!(r.lookup(b"/a.txt").unwrap().len, 3);
        dir.write("a.txt", "three");
        assert_eq!(contents(r.lookup(b"/a.txt")).unwrap(), "three");
        std::fs::remove_file(dir.path().join("a.txt")).unwrap();
        assert!(r.lookup(b"/a.txt").is_none());
    }

    #[test]
    fn setup_errors_name_the_path_or_pattern() {
        let dir = TempDir::new();
        dir.write("file.txt", "x");
        let missing = dir.path().join("nope");
        let e = Resolver::new(&missing, None, None, &[]).unwrap_err();
        assert!(
            e.contains(&missing.display().to_string()) && e.contains("No such file"),
            "{e}"
        );
        let e = Resolver::new(&dir.path().join("file.txt"), None, None, &[]).unwrap_err();
        assert!(
            e.contains("file.txt") && e.contains("not a directory"),
            "{e}"
        );
        let e = Resolver::new(dir.path(), Some("(unclosed"), None, &[]).unwrap_err();
        assert!(e.contains("staticmask \"(unclosed\""), "{e}");
    }
}
