//! Daemon mode: the process leaves its parent, its session and its
//! terminal, and the command that started it still exits with the outcome
//! of the start.
//!
//! ```text
//! swiftiply -d ──fork──▶ child ──setsid, fork──▶ daemon ── … serves
//!      │                   └─ exits at once        │
//!      └─ reads the report pipe ◀── ready / failed ┘
//!         exits 0 (printing the daemon's start-up lines) or 1 (its error)
//! ```
//!
//! The second fork leaves the daemon in a new session without being its
//! leader, so it can never acquire a controlling terminal again. Its stdin
//! and stdout become /dev/null; stderr too, but only when it is a terminal:
//! a file or a pipe (`2>>log`, a service manager) keeps receiving the log.
//! The umask and the working directory are kept (see `daemon/mod.rs`).
//!
//! Invariants: `detach` forks only while the process has a single thread
//! (a fork copies only the calling thread, so a lock held by another one
//! would stay locked forever); it returns only in the daemon; the report
//! is sent at most once (`ready` and `failed` consume the `Detached`), and
//! a daemon that dies before sending it closes the pipe, which the waiting
//! process reads as a failure.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};

use log::debug;

/// First byte of the report: the daemon serves.
const READY: u8 = b'R';
/// First byte of the report: the start failed; the rest is the reason.
const FAILED: u8 = b'F';

/// The daemon's end of the report pipe to the process that started it.
#[derive(Debug)]
pub struct Detached {
    report: File,
}

/// Forks into the background. Returns only in the daemon, with the pipe to
/// report the start on; the original process waits for that report and
/// exits with it (0 after printing the daemon's start-up lines, 1 after
/// printing its error). An `Err` means nothing was forked and the caller
/// is still the original, foreground process. Failures in the forked
/// processes are reported through the pipe and end them there.
pub fn detach() -> Result<Detached, String> {
    let threads = thread_count();
    if threads > 1 {
        return Err(format!(
            "cannot become a daemon: the process already runs {threads} threads and a fork \
             would keep only one (daemon mode must start before the workers)"
        ));
    }
    let (read, write) = report_pipe().map_err(|e| format!("cannot become a daemon: pipe: {e}"))?;
    // SAFETY: the process has a single thread (checked above), so the
    // child's copy of every lock and allocator state is consistent.
    match unsafe { libc::fork() } {
        -1 => Err(format!(
            "cannot become a daemon: fork: {}",
            io::Error::last_os_error()
        )),
        0 => {
            drop(read);
            Ok(Detached { report: write }.leave_session())
        }
        child => {
            drop(write);
            wait_for_daemon(read, child)
        }
    }
}

impl Detached {
    /// The daemon serves: the waiting process prints `startup` (the lines
    /// the foreground proxy would print) to its stderr and exits 0.
    pub fn ready(self, startup: &str) {
        self.send(READY, startup);
    }

    /// The start failed: the waiting process prints `swiftiply: {why}` and
    /// exits 1. The daemon should exit non-zero after this.
    pub fn failed(self, why: &str) {
        self.send(FAILED, why);
    }

    /// Sends the report and closes the pipe. The waiting process may have
    /// gone (killed by Ctrl-C, say); the daemon carries on regardless.
    fn send(mut self, status: u8, text: &str) {
        let mut msg = Vec::with_capacity(1 + text.len());
        msg.push(status);
        msg.extend_from_slice(text.as_bytes());
        if let Err(e) = self.report.write_all(&msg) {
            debug!("daemon: the process that started it did not take its report: {e}");
        }
    }

    fn fail_and_exit(self, why: &str) -> ! {
        self.failed(why);
        // SAFETY: _exit ends this forked process without running the
        // original process's exit handlers or flushing its copied buffers.
        unsafe { libc::_exit(1) }
    }

    /// In the first child: a new session, then the second fork; returns in
    /// the daemon (the grandchild) with stdio detached.
    fn leave_session(self) -> Detached {
        // SAFETY: plain system calls in a single-threaded process.
        if unsafe { libc::setsid() } == -1 {
            let e = io::Error::last_os_error();
            self.fail_and_exit(&format!("cannot become a daemon: setsid: {e}"));
        }
        // SAFETY: still a single thread (the fork copied only this one).
        match unsafe { libc::fork() } {
            -1 => {
                let e = io::Error::last_os_error();
                self.fail_and_exit(&format!("cannot become a daemon: second fork: {e}"));
            }
            0 => {}
            // SAFETY: the session leader's job is done; see fail_and_exit.
            _ => unsafe { libc::_exit(0) },
        }
        if let Err(e) = quiet_stdio() {
            self.fail_and_exit(&format!(
                "cannot become a daemon: cannot point stdin/stdout at /dev/null: {e}"
            ));
        }
        self
    }
}

/// In the original process: reaps the first child, reads the daemon's
/// report until the pipe closes, prints it and exits with its outcome.
fn wait_for_daemon(mut read: File, child: libc::pid_t) -> ! {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is written by waitpid.
    while unsafe { libc::waitpid(child, &mut status, 0) } == -1
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
    let mut report = Vec::new();
    let _ = read.read_to_end(&mut report);
    let code = match report.split_first() {
        Some((&READY, startup)) => {
            eprint!("{}", String::from_utf8_lossy(startup));
            0
        }
        Some((&FAILED, why)) => {
            eprintln!("swiftiply: {}", String::from_utf8_lossy(why));
            1
        }
        _ => {
            eprintln!(
                "swiftiply: the daemon exited before it finished starting \
                 (its log, on stderr when stderr is not a terminal, may say why)"
            );
            1
        }
    };
    std::process::exit(code)
}

/// A pipe whose ends close on exec; (read end, write end).
fn report_pipe() -> io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned by nothing
    // else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// stdin and stdout → /dev/null; stderr too when it is a terminal.
fn quiet_stdio() -> io::Result<()> {
    let null = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?
        .into_raw_fd();
    // SAFETY: isatty only inspects descriptor 2.
    let stderr_is_terminal = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
    let mut targets = vec![libc::STDIN_FILENO, libc::STDOUT_FILENO];
    if stderr_is_terminal {
        targets.push(libc::STDERR_FILENO);
    }
    let mut result = Ok(());
    for fd in targets {
        // SAFETY: both are valid descriptors; dup2 replaces `fd` atomically.
        if unsafe { libc::dup2(null, fd) } == -1 {
            result = Err(io::Error::last_os_error());
            break;
        }
    }
    // Keep /dev/null open if it landed on one of the standard descriptors
    // (possible only if one was closed at start).
    if null > libc::STDERR_FILENO {
        // SAFETY: `null` is ours and no longer needed.
        unsafe { libc::close(null) };
    }
    result
}

/// Threads of this process (`/proc/self/status`); 1 where it cannot be read.
fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_thread_is_counted_so_detach_would_refuse_to_fork() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let helper = std::thread::spawn(move || {
            let _ = rx.recv();
        });
        assert!(thread_count() >= 2, "{}", thread_count());
        drop(tx);
        helper.join().unwrap();
    }
}
