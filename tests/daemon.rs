//! Daemon mode, the pid file and dropping root, with the real binary.
//!
//! A daemon outlives the command that started it, so every test that may
//! start one holds a `Reaper` for its config file: on drop (also when an
//! assertion fails) it kills any process still running with that config.
//! A daemon's stderr is a file in the test's directory (a kept log, as
//! with `2>>log`), read once the starting command has exited.
//!
//! The privilege tests need root (as here and in CI); without it they
//! print a note and return.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// How long `swiftiply -d` may take to report the daemon's start.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopped daemon may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Processes seen through /proc
// ---------------------------------------------------------------------------

/// Kills, on drop, every process whose command line has the config path:
/// a daemon a failed assertion would otherwise leave running.
struct Reaper {
    config: PathBuf,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in pids_running(&self.config) {
            // SAFETY: plain kill of a pid this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Live processes with `arg` among their arguments.
fn pids_running(arg: &Path) -> Vec<i32> {
    let want = arg.as_os_str().as_encoded_bytes();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == want))
        })
        .filter(|&pid| !exited(pid))
        .collect()
}

/// The fields of /proc/PID/stat after the command name: state, ppid,
/// pgrp, session, tty_nr, …
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &text[text.rfind(')')? + 1..];
    Some(after.split_whitespace().map(String::from).collect())
}

/// Gone, or a zombie waiting for whoever adopted it.
fn exited(pid: i32) -> bool {
    stat_fields(pid).is_none_or(|f| f[0] == "Z" || f[0] == "X")
}

fn session_of(pid: i32) -> i32 {
    stat_fields(pid).expect("process is gone")[3]
        .parse()
        .unwrap()
}

fn tty_of(pid: i32) -> i64 {
    stat_fields(pid).expect("process is gone")[4]
        .parse()
        .unwrap()
}

/// Where descriptor `fd` of `pid` points.
fn fd_target(pid: i32, fd: i32) -> String {
    fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/fd/{fd}: {e}"))
}

/// A `/proc/PID/status` line's values, e.g. "Uid" → the four uids.
fn status_ids(pid: i32, key: &str) -> Vec<u32> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    line.split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True where the test can run; prints why it does not otherwise.
fn root_or_skip(test: &str) -> bool {
    if !is_root() {
        eprintln!("note: {test} skipped: dropping privileges can be tested only as root");
    }
    is_root()
}

/// `id` for `nobody`: its uid, gid and the groups `initgroups` gives it.
fn nobody() -> (u32, u32, Vec<u32>) {
    let id = |flag: &str| -> Vec<u32> {
        let out = Command::new("id")
            .args([flag, "nobody"])
            .output()
            .expect("run id");
        assert!(out.status.success(), "id {flag} nobody: {out:?}");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    let mut groups = id("-G");
    groups.sort_unstable();
    (id("-u")[0], id("-g")[0], groups)
}

/// A `sleep 30` that is killed when dropped.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------
// Starting `swiftiply -d`
// ---------------------------------------------------------------------------

/// A test directory with a config file and the path its pid file gets.
struct Setup {
    /// First, so it is dropped first: the daemon dies before its directory.
    _reaper: Reaper,
    dir: TempDir,
    config: PathBuf,
    pidfile: PathBuf,
}

impl Setup {
    /// `top` and `section` as for `one_section`; `pidfile:` is added, in
    /// the test's directory.
    fn new(top: &str, section: &str) -> Setup {
        Setup::with_pidfile(top, section, None)
    }

    fn with_pidfile(top: &str, section: &str, pidfile: Option<PathBuf>) -> Setup {
        let dir = TempDir::new("daemon");
        let pidfile = pidfile.unwrap_or_else(|| dir.path.join("swiftiply.pid"));
        let top = format!("pidfile: {}\n{top}", pidfile.display());
        let config = dir.write("config.yml", &one_section(&top, section));
        Setup {
            _reaper: Reaper {
                config: config.clone(),
            },
            dir,
            config,
            pidfile,
        }
    }

    fn pid_in_file(&self) -> Option<i32> {
        fs::read_to_string(&self.pidfile).ok()?.trim().parse().ok()
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path.join("stderr.log")).unwrap_or_default()
    }

    /// Runs `swiftiply ARGS… CONFIG` with stderr appended to `stderr.log`
    /// in the directory; waits for it to exit.
    fn launch(&self, args: &[&str]) -> Launched {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path.join("stderr.log"))
            .expect("open stderr.log");
        let before = self.log().len();
        self.launch_with(args, Stdio::from(log), before, None)
    }

    /// `launch` with the starting process's stderr and, with `as_user`,
    /// run as that (uid, gid).
    fn launch_with(
        &self,
        args: &[&str],
        stderr: Stdio,
        log_from: usize,
        as_user: Option<(u32, u32)>,
    ) -> Launched {
        let started = Instant::now();
        let mut command = Command::new(BIN);
        if let Some((uid, gid)) = as_user {
            command.uid(uid).gid(gid);
        }
        let mut child = command
            .args(args)
            .arg(&self.config)
            .current_dir(&self.dir.path)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
        let status = loop {
            if let Some(s) = child.try_wait().expect("try_wait") {
                break s;
            }
            if started.elapsed() > START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "`swiftiply {}` did not exit within {START_TIMEOUT:?}; log:\n{}",
                    args.join(" "),
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        Launched {
            code: status.code(),
            parent: child.id() as i32,
            took: started.elapsed(),
            stderr: self.log().get(log_from..).unwrap_or_default().to_string(),
        }
    }

    /// `launch`, which must succeed with a daemon named by the pid file.
    fn start_daemon(&self, args: &[&str]) -> Daemon {
        let out = self.launch(args);
        assert_eq!(out.code, Some(0), "the start failed:\n{}", out.stderr);
        let pid = self
            .pid_in_file()
            .unwrap_or_else(|| panic!("no pid in the pid file; log:\n{}", self.log()));
        assert_ne!(pid, out.parent, "the pid file names the starting process");
        assert!(!exited(pid), "the daemon {pid} is not running");
        Daemon {
            pid,
            client: address_after(&out.stderr, "swiftiply: clients listening on "),
            backend: address_after(&out.stderr, "swiftiply: section 0 backends listening on "),
            out,
        }
    }
}

/// How the starting command ended.
struct Launched {
    code: Option<i32>,
    parent: i32,
    took: Duration,
    /// What it (and the daemon) wrote to stderr during the run.
    stderr: String,
}

/// A daemon started by `Setup::start_daemon`.
struct Daemon {
    pid: i32,
    client: SocketAddr,
    backend: SocketAddr,
    out: Launched,
}

impl Daemon {
    /// SIGTERM, then waits until the process is gone.
    fn stop(&self) {
        // SAFETY: signals the daemon this test started.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        assert!(
            eventually(EXIT_TIMEOUT, || exited(self.pid)),
            "daemon {} still running {EXIT_TIMEOUT:?} after SIGTERM",
            self.pid
        );
    }
}

fn address_after(text: &str, marker: &str) -> SocketAddr {
    text.lines()
        .find_map(|l| l.split_once(marker).map(|(_, a)| a.trim()))
        .unwrap_or_else(|| panic!("no `{marker}` line in:\n{text}"))
        .parse()
        .unwrap_or_else(|e| panic!("bad address after `{marker}`: {e}\n{text}"))
}

/// A request through the proxy reaches a backend and comes back.
fn serves(client: SocketAddr, backend: SocketAddr) {
    let mut b = Backend::connect(backend, &id12("daemon", 1), "");
    let echo = thread::spawn(move || b.echo_one());
    let r = get_once(client, "app.test", "/through-the-daemon");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body_contains("/through-the-daemon"), "{r:?}");
    join_within(echo, IO_TIMEOUT, "echo backend");
}

/// The daemon left its session and terminal, serves, and stops on SIGTERM,
/// taking its pid file with it.
fn check_daemon_lifecycle(s: &Setup, d: &Daemon) {
    assert!(
        d.out.took < START_TIMEOUT / 2,
        "the start took {:?}",
        d.out.took
    );
    assert!(
        d.out.stderr.contains("swiftiply: ready"),
        "{}",
        d.out.stderr
    );
    assert_eq!(
        pids_running(&s.config),
        vec![d.pid],
        "the reaper would not find the daemon (or finds more)"
    );
    // SAFETY: getsid(0) asks for this process's own session.
    let our_session = unsafe { libc::getsid(0) };
    let session = session_of(d.pid);
    assert_ne!(session, our_session, "the daemon kept the test's session");
    assert_ne!(
        session, d.pid,
        "the daemon leads its session (no second fork)"
    );
    assert_eq!(tty_of(d.pid), 0, "the daemon has a controlling terminal");
    assert_eq!(fd_target(d.pid, 0), "/dev/null");
    assert_eq!(fd_target(d.pid, 1), "/dev/null");
    assert!(
        fd_target(d.pid, 2).ends_with("stderr.log"),
        "stderr was a file and must stay one: {}",
        fd_target(d.pid, 2)
    );
    serves(d.client, d.backend);
    d.stop();
    assert!(!s.pidfile.exists(), "the pid file outlived the daemon");
    assert!(s.log().contains("swiftiply: stopped"), "{}", s.log());
}

// ---------------------------------------------------------------------------
// Daemon mode
// ---------------------------------------------------------------------------

#[test]
fn dash_d_returns_once_the_daemon_serves_and_sigterm_stops_it_and_removes_its_pid_file() {
    let s = Setup::new("", "");
    let d = s.start_daemon(&["-d"]);
    check_daemon_lifecycle(&s, &d);
}

#[test]
fn daemonize_true_in_the_config_does_the_same() {
    let s = Setup::new("daemonize: true", "");
    let d = s.start_daemon(&[]);
    check_daemon_lifecycle(&s, &d);
}

/// A pseudo-terminal: (master for reading what is written, slave path).
fn open_pty() -> (File, PathBuf) {
    // SAFETY: posix_openpt returns a new descriptor that we own;
    // grantpt/unlockpt/ptsname_r only act on it and on `name`.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::grantpt(master), 0, "grantpt");
        assert_eq!(libc::unlockpt(master), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let slave = std::ffi::CStr::from_ptr(name.as_ptr());
        (
            File::from_raw_fd(master),
            PathBuf::from(slave.to_string_lossy().into_owned()),
        )
    }
}

#[test]
fn with_a_terminal_on_stderr_the_start_up_lines_reach_it_and_the_daemon_lets_go_of_it() {
    let s = Setup::new("", "");
    let (mut master, slave) = open_pty();
    let terminal = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&slave)
        .expect("open the pty");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    // Ends when every holder of the terminal has closed it (EIO).
    thread::spawn(move || {
        let mut buf = [0; 4096];
        while let Ok(n @ 1..) = master.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let out = s.launch_with(&["-d"], Stdio::from(terminal), 0, None);
    let shown = || String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert_eq!(out.code, Some(0), "{}", shown());
    assert!(
        eventually(IO_TIMEOUT, || shown().contains("swiftiply: ready")),
        "the terminal did not get the start-up lines:\n{}",
        shown()
    );
    let pid = s.pid_in_file().expect("no pid file");
    assert_eq!(
        fd_target(pid, 2),
        "/dev/null",
        "the daemon kept the terminal"
    );
    assert_eq!(tty_of(pid), 0);
    let d = Daemon {
        pid,
        client: address_after(&shown(), "swiftiply: clients listening on "),
        backend: address_after(&shown(), "swiftiply: section 0 backends listening on "),
        out,
    };
    serves(d.client, d.backend);
    d.stop();
    assert!(!s.pidfile.exists());
}

#[test]
fn a_daemon_that_cannot_start_makes_the_command_exit_1_with_the_reason() {
    let s = Setup::new("", "docroot: /nonexistent-swiftiply-docroot");
    let out = s.launch(&["-d"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("swiftiply: section app.test: docroot: "),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("/nonexistent-swiftiply-docroot"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("swiftiply: ready"), "{}", out.stderr);
    assert!(!s.pidfile.exists(), "a failed start left its pid file");
    assert!(
        eventually(EXIT_TIMEOUT, || pids_running(&s.config).is_empty()),
        "the failed daemon is still running"
    );
}

#[test]
fn a_busy_port_stops_the_start_before_detaching() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let s = Setup::new(&format!("cluster_port: {port}"), "");
    let out = s.launch(&["-d"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    assert!(!s.pidfile.exists());
    assert!(pids_running(&s.config).is_empty());
}

// ---------------------------------------------------------------------------
// The pid file
// ---------------------------------------------------------------------------

#[test]
fn a_stale_pid_file_is_replaced_by_the_new_pid() {
    let pid_max: u64 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(4194304);
    let mut finished = Command::new("true").spawn().expect("run true");
    let finished_pid = finished.id();
    finished.wait().unwrap();
    for stale in [
        format!("{}\n", pid_max + 1),
        format!("{finished_pid}\n"),
        "not a pid at all\n".to_string(),
    ] {
        let s = Setup::new("", "");
        fs::write(&s.pidfile, &stale).unwrap();
        let d = s.start_daemon(&["-d"]);
        assert_eq!(
            fs::read_to_string(&s.pidfile).unwrap(),
            format!("{}\n", d.pid),
            "stale content {stale:?}"
        );
        assert!(
            d.out.stderr.contains("removing stale pid file"),
            "stale content {stale:?}:\n{}",
            d.out.stderr
        );
        d.stop();
        assert!(!s.pidfile.exists());
    }
}

#[test]
fn a_pid_file_naming_a_running_process_refuses_the_start_and_stays_untouched() {
    let sleeper = Sleeper(Command::new("sleep").arg("30").spawn().expect("run sleep"));
    for (running, args) in [
        (std::process::id(), &["-d"][..]),
        (sleeper.0.id(), &["-d"][..]),
        (sleeper.0.id(), &[][..]),
    ] {
        let s = Setup::new("", "");
        let content = format!("{running}\n");
        fs::write(&s.pidfile, &content).unwrap();
        let out = s.launch(args);
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "names process {running}, which is running; is swiftiply already running?"
            )),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("swiftiply: ready"), "{}", out.stderr);
        assert_eq!(fs::read_to_string(&s.pidfile).unwrap(), content);
    }
}

// ---------------------------------------------------------------------------
// Dropping root
// ---------------------------------------------------------------------------

#[test]
fn as_root_user_nobody_runs_with_nobodys_ids_and_groups() {
    if !root_or_skip("as_root_user_nobody_runs_with_nobodys_ids_and_groups") {
        return;
    }
    let (uid, gid, groups) = nobody();
    let p = Proxy::start(&one_section("user: nobody", ""));
    let pid = p.pid() as i32;
    assert_eq!(status_ids(pid, "Uid"), vec![uid; 4]);
    assert_eq!(status_ids(pid, "Gid"), vec![gid; 4]);
    let mut now = status_ids(pid, "Groups");
    now.sort_unstable();
    assert_eq!(now, groups);
    assert!(
        p.stderr_text()
            .contains(&format!("running as user nobody (uid {uid}), group ")),
        "{}",
        p.stderr_text()
    );
    serves(p.client_addr(), p.backend_addr(0));
}

#[test]
fn as_root_a_group_alone_changes_only_the_group() {
    if !root_or_skip("as_root_a_group_alone_changes_only_the_group") {
        return;
    }
    let (_, nobody_gid, _) = nobody();
    let has_nogroup = fs::read_to_string("/etc/group")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("nogroup:"));
    let group = if has_nogroup {
        "nogroup".to_string()
    } else {
        nobody_gid.to_string()
    };
    let p = Proxy::start(&one_section(&format!("group: {group}"), ""));
    let pid = p.pid() as i32;
    let gid = status_ids(pid, "Gid")[0];
    if !has_nogroup {
        assert_eq!(gid, nobody_gid);
    }
    assert_ne!(gid, 0);
    assert_eq!(status_ids(pid, "Uid"), vec![0; 4]);
    assert_eq!(status_ids(pid, "Gid"), vec![gid; 4]);
    assert_eq!(status_ids(pid, "Groups"), vec![gid]);
    serves(p.client_addr(), p.backend_addr(0));
}

#[test]
fn an_unknown_user_stops_the_start_before_anything_is_served() {
    let s = Setup::new("user: no-such-user-xyz", "");
    let out = s.launch(&["-d"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("swiftiply: user no-such-user-xyz does not exist"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("listening on"), "{}", out.stderr);
    assert!(!out.stderr.contains("swiftiply: ready"), "{}", out.stderr);
    assert!(!s.pidfile.exists(), "a failed start left its pid file");
}

/// A free port below 1024 on 127.0.0.1 (only root can bind one).
fn free_privileged_port() -> u16 {
    (800..1024)
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("no free port in 800..1024")
}

#[test]
fn as_root_a_port_below_1024_is_bound_before_dropping_to_nobody() {
    if !root_or_skip("as_root_a_port_below_1024_is_bound_before_dropping_to_nobody") {
        return;
    }
    let (uid, _, _) = nobody();
    let port = free_privileged_port();
    let p = Proxy::start(&one_section(
        &format!("cluster_port: {port}\nuser: nobody"),
        "",
    ));
    assert_eq!(p.client_addr().port(), port);
    assert_eq!(status_ids(p.pid() as i32, "Uid"), vec![uid; 4]);
    serves(p.client_addr(), p.backend_addr(0));
}

#[test]
fn as_root_the_pid_file_is_removed_where_user_may_and_found_stale_where_not() {
    if !root_or_skip("as_root_the_pid_file_is_removed_where_user_may_and_found_stale_where_not") {
        return;
    }
    let (uid, gid, _) = nobody();
    // A directory nobody may write: the daemon removes its file at exit.
    let s = Setup::new("user: nobody", "");
    std::os::unix::fs::chown(&s.dir.path, Some(uid), Some(gid)).unwrap();
    let d = s.start_daemon(&["-d"]);
    assert_eq!(status_ids(d.pid, "Uid"), vec![uid; 4]);
    serves(d.client, d.backend);
    d.stop();
    assert!(!s.pidfile.exists(), "{}", s.log());

    // A root-owned pid directory: the file stays, with a warning, and the
    // next start replaces it as stale.
    let piddir = TempDir::new("daemon-piddir");
    let pidfile = piddir.path.join("swiftiply.pid");
    let s = Setup::with_pidfile("user: nobody", "", Some(pidfile));
    let d = s.start_daemon(&["-d"]);
    d.stop();
    assert!(s.log().contains("cannot remove pid file"), "{}", s.log());
    assert_eq!(s.pid_in_file(), Some(d.pid));
    let again = s.start_daemon(&["-d"]);
    assert!(
        again.out.stderr.contains("removing stale pid file"),
        "{}",
        again.out.stderr
    );
    again.stop();
}

#[test]
fn started_as_a_plain_user_only_its_own_identity_may_be_asked_for() {
    if !root_or_skip("started_as_a_plain_user_only_its_own_identity_may_be_asked_for") {
        return;
    }
    let (uid, gid, _) = nobody();
    let log = |s: &Setup| {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(s.dir.path.join("stderr.log"))
            .unwrap();
        Stdio::from(f)
    };

    let s = Setup::new("user: root", "");
    std::os::unix::fs::chown(&s.dir.path, Some(uid), Some(gid)).unwrap();
    let out = s.launch_with(&["-d"], log(&s), 0, Some((uid, gid)));
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "cannot switch to user root (0) and group root (0): swiftiply was started as \
             uid {uid}, not as root"
        )),
        "{}",
        out.stderr
    );
    assert!(!s.pidfile.exists());

    let s = Setup::new("user: nobody", "");
    std::os::unix::fs::chown(&s.dir.path, Some(uid), Some(gid)).unwrap();
    let out = s.launch_with(&["-d"], log(&s), 0, Some((uid, gid)));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("already running as user nobody"),
        "{}",
        out.stderr
    );
    let pid = s.pid_in_file().expect("no pid file");
    let d = Daemon {
        pid,
        client: address_after(&out.stderr, "swiftiply: clients listening on "),
        backend: address_after(&out.stderr, "swiftiply: section 0 backends listening on "),
        out,
    };
    serves(d.client, d.backend);
    d.stop();
    assert!(!s.pidfile.exists());
}
