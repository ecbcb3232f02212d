//! Request bodies larger than `request_buffer`, kept on disk until complete
//! so that a slow upload never holds a backend (nginx's
//! `client_body_temp_path`; docs/request-framing.md).
//!
//! Each body goes to an unlinked file in `request_spool_directory`
//! (`O_TMPFILE`, or a named file removed at once where the filesystem lacks
//! it), so nothing is left behind by a crash. A worker keeps at most
//! `request_spool_limit` bytes spooled: a Content-Length body reserves its
//! whole length when it starts, a chunked body reserves as it grows. The
//! reservation is given back when the file is dropped (`release`).
//!
//! Invariant: `used` is the sum of `reserved` over every live `SpoolFile`
//! this worker made.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::filesend::FileSend;

/// What a chunked body reserves at a time.
const CHUNKED_STEP: u64 = 1 << 20;

pub struct Spool {
    dir: PathBuf,
    limit: u64,
    used: u64,
}

/// One body on disk: written while it arrives, then sent to the backend.
pub struct SpoolFile {
    file: File,
    /// Bytes written.
    pub len: u64,
    reserved: u64,
}

impl Spool {
    pub fn new(dir: Option<&Path>, limit: u64) -> Spool {
        Spool {
            dir: dir.map_or_else(std::env::temp_dir, Path::to_path_buf),
            limit,
            used: 0,
        }
    }

    /// Applies a reload's settings; files already open keep going.
    pub fn configure(&mut self, dir: Option<&Path>, limit: u64) {
        self.dir = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
        self.limit = limit;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// A file for a body of `len` bytes (None: chunked, unknown). None when
    /// the spool is full or off, or the file cannot be made.
    pub fn open(&mut self, len: Option<u64>) -> io::Result<Option<SpoolFile>> {
        let room = self.limit.saturating_sub(self.used);
        let reserve = len.unwrap_or(CHUNKED_STEP.min(room));
        if reserve == 0 || reserve > room {
            return Ok(None);
        }
        let file = unlinked_file(&self.dir)?;
        self.used += reserve;
        Ok(Some(SpoolFile {
            file,
            len: 0,
            reserved: reserve,
        }))
    }

    /// Appends `bytes`, reserving more for a growing chunked body. Err
    /// `StorageFull` when the spool has no room left for them.
    pub fn append(&mut self, f: &mut SpoolFile, bytes: &[u8]) -> io::Result<()> {
        let need = f.len + bytes.len() as u64;
        if need > f.reserved {
            let more = (need - f.reserved).max(CHUNKED_STEP);
            if self.used + more > self.limit {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "request_spool_limit reached",
                ));
            }
            self.used += more;
            f.reserved += more;
        }
        f.file.write_all(bytes)?;
        f.len = need;
        Ok(())
    }

    /// Gives back the file's reservation (the file closes with it).
    pub fn release(&mut self, f: SpoolFile) {
        debug_assert!(self.used >= f.reserved);
        self.used -= f.reserved.min(self.used);
    }

    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used
    }
}

impl SpoolFile {
    /// A sender of the whole body, from its start (again, for a redeploy).
    pub fn sender(&self) -> io::Result<FileSend> {
        Ok(FileSend {
            file: self.file.try_clone()?,
            offset: 0,
            left: self.len,
        })
    }
}

/// An open, already unlinked, read-write file in `dir`.
fn unlinked_file(dir: &Path) -> io::Result<File> {
    let c_dir = c_path(dir)?;
    // SAFETY: `c_dir` is a valid NUL-terminated path for the call's duration.
    let fd = unsafe {
        libc::open(
            c_dir.as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd >= 0 {
        // SAFETY: `fd` was just opened and is owned by nothing else.
        return Ok(unsafe { File::from_raw_fd(fd) });
    }
    let e = io::Error::last_os_error();
    if !matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
    ) {
        return Err(e);
    }
    // No O_TMPFILE here: a fresh name, removed as soon as it is open.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!(".swiftiply-body-{}-{n}", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

fn c_path(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("swiftiply-spool-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_spooled_body_leaves_no_file_and_reads_back_whole() {
        let d = dir();
        let mut s = Spool::new(Some(&d), 1 << 30);
        let mut f = s.open(Some(11)).unwrap().unwrap();
        s.append(&mut f, b"hello ").unwrap();
        s.append(&mut f, b"world").unwrap();
        assert_eq!(f.len, 11);
        assert_eq!(
            std::fs::read_dir(&d).unwrap().count(),
            0,
            "the file is unlinked"
        );
        let send = f.sender().unwrap();
        let mut back = vec![0u8; 11];
        send.file.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(&back, b"hello world");
        assert_eq!(s.used(), 11);
        s.release(f);
        assert_eq!(s.used(), 0);
        let _ = std::fs::remove_dir(&d);
    }

    #[test]
    fn the_limit_bounds_what_is_reserved() {
        let d = dir();
        let mut s = Spool::new(Some(&d), 3 * CHUNKED_STEP);
        assert!(s.open(Some(3 * CHUNKED_STEP + 1)).unwrap().is_none());
        let a = s.open(Some(2 * CHUNKED_STEP)).unwrap().unwrap();
        let mut b = s.open(None).unwrap().unwrap();
        assert!(s.open(None).unwrap().is_none(), "full");
        let step = vec![b'x'; CHUNKED_STEP as usize];
        s.append(&mut b, &step).unwrap();
        let e = s.append(&mut b, b"y").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        s.release(a);
        s.append(&mut b, b"y").unwrap();
        s.release(b);
        assert_eq!(s.used(), 0);
        let off = Spool::new(Some(&d), 0);
        assert!(!off.enabled());
        let _ = std::fs::remove_dir(&d);
    }
}
