//! `--spawn`: running the application copies the bridge forwards to.
//!
//! Copy `i` is `sh -c CMD` with `PORT=port_base+i`, in a process group of its
//! own (so a shell's children are signalled with it, and a terminal's Ctrl-C
//! reaches only the bridge, which then stops the copies in order), its pid
//! written to `DIR/app-<i>.pid`. On Linux each copy also gets SIGTERM if the
//! bridge dies without cleaning up (`PR_SET_PDEATHSIG`).
//!
//! Invariants:
//! - Children are started and reaped only from the thread that created
//!   `Apps` (the main thread): `PR_SET_PDEATHSIG` fires when the *thread*
//!   that forked the child ends, so that thread must live as long as the
//!   bridge does.
//! - A pid file exists exactly while its copy runs: written after the spawn,
//!   removed when the copy is reaped or stopped; the directory is removed at
//!   the end if the bridge created it.
//! - `Registry` mirrors the running copies for the second-signal path, which
//!   runs on another thread and cannot wait: it only signals and unlinks.
//! - A copy that dies while the bridge runs is logged and restarted with a
//!   back-off (1 s, doubling to 30 s; reset after a minute of running).
//! - `stop` (also run on drop) ends every copy: SIGTERM to its group, up to
//!   `grace` for the group to go, then SIGKILL.

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::cli::SpawnOptions;

const RESTART_MIN: Duration = Duration::from_secs(1);
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A copy that ran this long restarts after the shortest back-off.
const STABLE: Duration = Duration::from_secs(60);
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// The running copies (process group id, pid file) and the pid directory
/// the bridge made, for the last-words path.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Registered>>);

#[derive(Clone, Default)]
struct Registered {
    copies: Vec<(i32, PathBuf)>,
    made_dir: Option<PathBuf>,
}

impl Registry {
    fn add(&self, pid: i32, pid_file: &Path) {
        if let Ok(mut r) = self.0.lock() {
            r.copies.push((pid, pid_file.to_path_buf()));
        }
    }

    fn remove(&self, pid: i32) {
        if let Ok(mut r) = self.0.lock() {
            r.copies.retain(|(p, _)| *p != pid);
        }
    }

    fn made_dir(&self, dir: &Path) {
        if let Ok(mut r) = self.0.lock() {
            r.made_dir = Some(dir.to_path_buf());
        }
    }

    /// SIGTERM to every copy's group, unlink the pid files (and the
    /// directory, if ours), without waiting: the process is about to exit.
    pub fn terminate_all(&self) {
        let r = match self.0.lock() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        };
        for (pid, file) in r.copies {
            signal_group(pid, libc::SIGTERM);
            let _ = fs::remove_file(file);
        }
        if let Some(dir) = r.made_dir {
            let _ = fs::remove_dir(dir);
        }
    }
}

struct Slot {
    index: usize,
    port: u16,
    pid_file: PathBuf,
    child: Option<Child>,
    started: Instant,
    backoff: Duration,
    /// When a dead copy is due to start again.
    restart_at: Option<Instant>,
}

/// The application copies of one bridge.
pub struct Apps {
    command: String,
    dir: PathBuf,
    made_dir: bool,
    slots: Vec<Slot>,
    registry: Registry,
    stopped: bool,
}

impl Apps {
    /// Starts every copy. On an error the copies already started are
    /// stopped again (by drop).
    pub fn start(opts: &SpawnOptions, registry: Registry) -> io::Result<Apps> {
        let (dir, made_dir) = match &opts.pid_dir {
            Some(d) => {
                let made = !d.exists();
                fs::create_dir_all(d).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("cannot create --pid-dir {}: {e}", d.display()),
                    )
                })?;
                (d.clone(), made)
            }
            None => {
                let d =
                    std::env::temp_dir().join(format!("swiftiply-bridge-{}", std::process::id()));
                fs::create_dir_all(&d).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create {}: {e}", d.display()))
                })?;
                (d, true)
            }
        };
        if made_dir {
            registry.made_dir(&dir);
        }
        let mut apps = Apps {
            command: opts.command.clone(),
            dir,
            made_dir,
            slots: Vec::new(),
            registry,
            stopped: false,
        };
        for i in 0..opts.copies {
            let port = opts.port(i);
            if accepts(port) {
                log::warn!(
                    "port {port} already accepts connections before app {i} starts; \
                     requests for it may reach whatever holds that port"
                );
            }
            let pid_file = apps.dir.join(format!("app-{i}.pid"));
            let mut slot = Slot {
                index: i,
                port,
                pid_file,
                child: None,
                started: Instant::now(),
                backoff: RESTART_MIN,
                restart_at: None,
            };
            launch(&apps.command, &apps.registry, &mut slot)?;
            apps.slots.push(slot);
        }
        log::info!("pid files in {}", apps.dir.display());
        Ok(apps)
    }

    /// Where to forward: one address per copy.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.slots
            .iter()
            .map(|s| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, s.port)))
            .collect()
    }

    /// Waits until every copy accepts TCP connections, at most `limit` (or
    /// until `stop`). Logs the copies that are not up; returns their ports.
    pub fn wait_ready(&mut self, limit: Duration, stop: &AtomicBool) -> Vec<u16> {
        let deadline = Instant::now() + limit;
        let mut up = vec![false; self.slots.len()];
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            self.watch();
            for (i, s) in self.slots.iter().enumerate() {
                if !up[i] && s.child.is_some() && accepts(s.port) {
                    up[i] = true;
                    log::info!(
                        "app {} is accepting connections on port {}",
                        s.index,
                        s.port
                    );
                }
            }
            if up.iter().all(|&u| u) {
                return Vec::new();
            }
            thread::sleep(Duration::from_millis(50));
        }
        let mut down = Vec::new();
        for (i, s) in self.slots.iter().enumerate() {
            if !up[i] {
                log::warn!(
                    "app {} does not accept connections on port {} after {limit:?}; \
                     bridging to it anyway (its requests go to the other copies, or get 502)",
                    s.index,
                    s.port
                );
                down.push(s.port);
            }
        }
        down
    }

    /// Reaps copies that died, logs them, and restarts those that are due.
    pub fn watch(&mut self) {
        if self.stopped {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        for (k, s) in self.slots.iter_mut().enumerate() {
            if let Some(child) = &mut s.child {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        let pid = child.id() as i32;
                        s.child = None;
                        self.registry.remove(pid);
                        let _ = fs::remove_file(&s.pid_file);
                        if s.started.elapsed() > STABLE {
                            s.backoff = RESTART_MIN;
                        }
                        log::error!(
                            "app {} (pid {pid}, port {}) exited: {}; restarting it in {:?}",
                            s.index,
                            s.port,
                            describe(status),
                            s.backoff
                        );
                        s.restart_at = Some(now + s.backoff);
                        s.backoff = (s.backoff * 2).min(RESTART_MAX);
                    }
                    Ok(None) => {}
                    Err(e) => log::warn!("app {}: cannot check on it: {e}", s.index),
                }
            } else if s.restart_at.is_some_and(|t| t <= now) {
                due.push(k);
            }
        }
        for k in due {
            let slot = &mut self.slots[k];
            if let Err(e) = launch(&self.command, &self.registry, slot) {
                log::error!("{e}; trying again in {:?}", slot.backoff);
                slot.restart_at = Some(now + slot.backoff);
                slot.backoff = (slot.backoff * 2).min(RESTART_MAX);
            }
        }
    }

    /// Stops every copy: SIGTERM to its group, up to `grace` for the group
    /// to go, then SIGKILL. Removes the pid files (and our directory).
    pub fn stop(&mut self, grace: Duration) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        for s in &self.slots {
            if let Some(child) = &s.child {
                log::info!("stopping app {} (pid {})", s.index, child.id());
                signal_group(child.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            let mut left = 0;
            for s in &mut self.slots {
                let Some(child) = &mut s.child else { continue };
                let pid = child.id() as i32;
                let reaped = matches!(child.try_wait(), Ok(Some(_)) | Err(_));
                // The shell may be gone while what it started still runs.
                if reaped && !group_alive(pid) {
                    s.child = None;
                    self.registry.remove(pid);
                    let _ = fs::remove_file(&s.pid_file);
                } else {
                    left += 1;
                }
            }
            if left == 0 || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        for s in &mut self.slots {
            if let Some(mut child) = s.child.take() {
                let pid = child.id() as i32;
                log::warn!(
                    "app {} (pid {pid}) did not stop within {grace:?}; killing it",
                    s.index
                );
                signal_group(pid, libc::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                self.registry.remove(pid);
            }
            let _ = fs::remove_file(&s.pid_file);
        }
        if self.made_dir {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

impl Drop for Apps {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Starts (or restarts) one copy and records its pid.
fn launch(command: &str, registry: &Registry, slot: &mut Slot) -> io::Result<()> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .env("PORT", slot.port.to_string())
        .stdin(Stdio::null())
        .process_group(0);
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
                if libc::getppid() != parent {
                    // The bridge died before the line above took effect.
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot start app {}: sh -c {:?}: {e}", slot.index, command),
        )
    })?;
    let pid = child.id() as i32;
    if let Err(e) = fs::write(&slot.pid_file, format!("{pid}\n")) {
        log::warn!("cannot write {}: {e}", slot.pid_file.display());
    }
    registry.add(pid, &slot.pid_file);
    log::info!("app {} started: pid {pid}, PORT={}", slot.index, slot.port);
    slot.child = Some(child);
    slot.started = Instant::now();
    slot.restart_at = None;
    Ok(())
}

/// Does something accept TCP connections on 127.0.0.1:`port`?
fn accepts(port: u16) -> bool {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).is_ok()
}

fn signal_group(pgid: i32, sig: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals that process group.
    unsafe {
        if libc::kill(-pgid, sig) != 0 {
            libc::kill(pgid, sig);
        }
    }
}

/// Is any process (zombies included) left in the group?
fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}
