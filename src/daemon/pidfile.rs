//! The pid file (`pidfile: PATH`): the pid of the running proxy, one line,
//! for init scripts and for `kill -HUP $(cat PATH)`.
//!
//! Rules:
//! - A file naming a live process other than this one stops the start: two
//!   proxies would fight over it (and usually over the ports).
//! - A file naming no live process (or holding no pid at all) is stale, left
//!   by a crash or a `kill -9`; it is replaced, with an info line.
//! - The file is written atomically (a temporary file in the same
//!   directory, fsync, rename), so a reader never sees it half-written, and
//!   with mode 0644.
//! - At exit (`Drop`) it is removed, but only while it still holds our pid.
//!   It is written before privileges are dropped, so its directory must be
//!   writable by `user` for the removal to succeed; otherwise a warning
//!   says so and the next start finds the file stale.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use log::{info, warn};

/// The pid file of this process; removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

/// What an existing pid file says.
#[derive(Debug, PartialEq, Eq)]
enum Existing {
    Absent,
    /// Names a running process that is not this one.
    Live(i32),
    /// Names no running process, or holds no pid; the reason, for the log.
    Stale(String),
}

impl PidFile {
    /// Writes this process's pid to `path`, unless `path` names another
    /// running process (then the error says which and what to do).
    pub fn create(path: &Path) -> Result<PidFile, String> {
        let pid = std::process::id();
        match inspect(path, pid)
            .map_err(|e| format!("cannot read pid file {}: {e}", path.display()))?
        {
            Existing::Absent => {}
            Existing::Live(other) => {
                return Err(format!(
                    "pid file {} names process {other}, which is running; is swiftiply \
                     already running? (remove the file if not)",
                    path.display()
                ))
            }
            Existing::Stale(why) => info!("removing stale pid file {}: {why}", path.display()),
        }
        write_atomically(path, pid)
            .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let path = self.path.display();
        match fs::read_to_string(&self.path) {
            Ok(text) if parse_pid(&text) == Some(self.pid as i32) => {
                if let Err(e) = fs::remove_file(&self.path) {
                    warn!(
                        "cannot remove pid file {path}: {e} (its directory must be writable \
                         by the user swiftiply runs as); the next start will find it stale \
                         and replace it"
                    );
                }
            }
            Ok(_) => warn!(
                "pid file {path} no longer holds this process's pid {}; left in place",
                self.pid
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot read pid file {path} to remove it: {e}"),
        }
    }
}

fn inspect(path: &Path, ours: u32) -> io::Result<Existing> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Existing::Absent),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return Ok(Existing::Stale("it does not hold a process id".into()))
        }
        Err(e) => return Err(e),
    };
    Ok(match parse_pid(&text) {
        None => Existing::Stale(format!(
            "it does not hold a process id ({:?})",
            text.chars().take(40).collect::<String>()
        )),
        // Our own pid: left by an earlier process whose pid was reused.
        Some(pid) if pid as u32 == ours => {
            Existing::Stale(format!("it names process {pid}, which is this one"))
        }
        Some(pid) if is_running(pid) => Existing::Live(pid),
        Some(pid) => Existing::Stale(format!("process {pid} is not running")),
    })
}

/// A positive pid on the first line (0 and negative numbers would make
/// `kill` address process groups).
fn parse_pid(text: &str) -> Option<i32> {
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

/// Signal 0 checks that `pid` exists without signalling it; EPERM means it
/// exists but belongs to another user. A zombie has exited: a daemon's
/// zombie waits for whoever adopted it, which some container init
/// processes do slowly or never, and must not block the next start.
fn is_running(pid: i32) -> bool {
    // SAFETY: signal 0 delivers nothing.
    let rc = unsafe { libc::kill(pid, 0) };
    let exists = rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// The state in /proc/PID/stat (after the parenthesised command name) is Z.
fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s[s.rfind(')')? + 1..].trim_start().chars().next()?;
            Some(state == 'Z')
        })
        .unwrap_or(false)
}

/// `PATH.tmp.<pid>` in the same directory, written, synced, renamed over
/// `PATH`; the directory is synced too (best effort) so the rename lasts.
fn write_atomically(path: &Path, pid: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file path"))?;
    let mut tmp_name = OsString::from(name);
    tmp_name.push(format!(".tmp.{pid}"));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            .open(&tmp)?;
        // The mode asked at creation is reduced by the umask; readers of a
        // pid file expect 0644.
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.write_all(format!("{pid}\n").as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
        return written;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("swiftiply-pidfile-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir.join("x.pid")
    }

    #[test]
    fn a_pid_is_a_positive_number_on_the_first_line() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid(" 42 \nmore"), Some(42));
        assert_eq!(parse_pid("0\n"), None);
        assert_eq!(parse_pid("-1\n"), None);
        assert_eq!(parse_pid("swiftiply\n"), None);
        assert_eq!(parse_pid(""), None);
    }

    #[test]
    fn the_file_is_written_0644_and_removed_on_drop_only_while_it_is_ours() {
        let path = temp_path("drop");
        let ours = PidFile::create(&path).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let dir = path.parent().unwrap().to_path_buf();
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "temporary file left"
        );
        drop(ours);
        assert!(!path.exists());

        // Another process took the file over: it stays.
        let ours = PidFile::create(&path).unwrap();
        fs::write(&path, "1\n").unwrap();
        drop(ours);
        assert_eq!(fs::read_to_string(&path).unwrap(), "1\n");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn live_stale_and_garbage_files_are_told_apart() {
        let path = temp_path("inspect");
        let ours = std::process::id();
        assert_eq!(inspect(&path, ours).unwrap(), Existing::Absent);
        // pid 1 always runs (in a container too).
        fs::write(&path, "1\n").unwrap();
        assert_eq!(inspect(&path, ours).unwrap(), Existing::Live(1));
        // Above the largest pid Linux hands out (4194304).
        fs::write(&path, "2147483000\n").unwrap();
        assert!(matches!(inspect(&path, ours).unwrap(), Existing::Stale(_)));
        fs::write(&path, "not a pid").unwrap();
        assert!(matches!(inspect(&path, ours).unwrap(), Existing::Stale(_)));
        fs::write(&path, format!("{ours}\n")).unwrap();
        assert!(matches!(inspect(&path, ours).unwrap(), Existing::Stale(_)));
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
