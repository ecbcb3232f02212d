//! The static-file path invariant (`crate::static_files`): whatever the
//! request path or X-Sendfile value, a file found is a regular file inside
//! the root, never one the staticmask hides.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::static_files::{FoundFile, StaticRoot};

/// The fixed tree `check_static_path` resolves against, built once per
/// process in the temp dir and removed when the process exits.
struct StaticTree {
    top: PathBuf,
    root: PathBuf,
    docroot: StaticRoot,
    sendfileroot: StaticRoot,
}

static TREE: OnceLock<StaticTree> = OnceLock::new();

fn static_tree() -> &'static StaticTree {
    TREE.get_or_init(|| {
        let top = std::env::temp_dir().join(format!("swiftiply-fuzz-tree-{}", std::process::id()));
        let _ = fs::remove_dir_all(&top);
        let root = top.join("root");
        for (path, text) in [
            ("root/index.html", "root index"),
            ("root/a.txt", "a"),
            ("root/sp ace.txt", "space"),
            ("root/secret.yml", "masked"),
            ("root/sub/index.html", "sub index"),
            ("root/sub/b.css", "b{}"),
            ("root/cache/page.html", "cached page"),
            ("root/cache/sub2/index.html", "cached index"),
            ("outside/escaped.txt", "OUTSIDE"),
            ("root-evil/x.txt", "OUTSIDE"),
        ] {
            let p = top.join(path);
            fs::create_dir_all(p.parent().expect("a parent")).expect("create the tree");
            fs::write(&p, text).expect("write the tree");
        }
        let link = |target: &Path, name: &str| {
            std::os::unix::fs::symlink(target, root.join(name)).expect("symlink");
        };
        link(Path::new("../a.txt"), "sub/in-link");
        link(Path::new("../outside/escaped.txt"), "out-link");
        link(&top.join("outside/escaped.txt"), "abs-out");
        link(Path::new("../outside"), "out-dir");
        link(Path::new("../root-evil"), "evil-dir");
        link(Path::new("sub"), "sub-link");
        let fifo = std::ffi::CString::new(root.join("fifo").into_os_string().into_encoded_bytes())
            .expect("no NUL in the temp dir");
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) };
        extern "C" fn remove_tree() {
            if let Some(t) = TREE.get() {
                let _ = fs::remove_dir_all(&t.top);
            }
        }
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(remove_tree) };
        let exts = ["html".to_owned()];
        StaticTree {
            docroot: StaticRoot::new(&root, Some("secret"), Some("cache"), &exts)
                .expect("the docroot"),
            sendfileroot: StaticRoot::new(&root, None, None, &[]).expect("the sendfileroot"),
            root: fs::canonicalize(&root).expect("canonical root"),
            top,
        }
    })
}

pub fn check_static_path(data: &[u8]) {
    let t = static_tree();
    let found = t.docroot.lookup(data).map(|f| inside_root(t, &f, data));
    if let Some(p) = &found {
        assert!(
            !p.ends_with("secret.yml"),
            "the masked file served for {data:?}"
        );
    }
    if let Some(f) = t.sendfileroot.lookup_sendfile(data) {
        inside_root(t, &f, data);
    }
    if !data.contains(&b'%') {
        let mut encoded = Vec::with_capacity(data.len() * 3);
        for &b in data {
            match b {
                b'/' => encoded.push(b),
                _ => encoded.extend_from_slice(format!("%{b:02X}").as_bytes()),
            }
        }
        let again = t
            .docroot
            .lookup(&encoded)
            .map(|f| inside_root(t, &f, &encoded));
        assert_eq!(again, found, "percent-encoding {data:?} found another file");
    }
}

/// The canonical path of a found file, checked: a regular file in the root.
fn inside_root(t: &StaticTree, f: &FoundFile, asked: &[u8]) -> PathBuf {
    let link = fs::read_link(format!("/proc/self/fd/{}", f.file.as_raw_fd())).expect("fd path");
    let canonical = fs::canonicalize(&link).expect("a found file exists");
    assert!(
        canonical.starts_with(&t.root),
        "{asked:?} escaped to {canonical:?}"
    );
    assert!(
        f.file.metadata().is_ok_and(|m| m.is_file()),
        "{asked:?} not a regular file"
    );
    canonical
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_paths_stay_inside_the_root() {
        for p in [
            &b"/a.txt"[..],
            b"/sub/",
            b"/sub/in-link",
            b"/out-link",
            b"/abs-out",
            b"/out-dir/escaped.txt",
            b"/evil-dir/x.txt",
            b"/secret.yml",
            b"/%73ecret.yml",
            b"/./secret.yml",
            b"/page",
            b"/sub2/",
            b"/fifo",
            b"/../outside/escaped.txt",
            b"/sub-link/b.css",
        ] {
            check_static_path(p);
        }
        let t = static_tree();
        assert!(t.docroot.lookup(b"/sub-link/b.css").is_some());
        assert!(t.docroot.lookup(b"/page").is_some());
        assert!(t.docroot.lookup(b"/abs-out").is_none());
    }
}
