//! The bench's workshop: a temporary directory, child processes that never
//! outlive the harness, CPU placement, deadlines and small `/proc` readers.
//!
//! Invariants: every child runs in its own process group (so nginx's worker
//! dies with its master) and gets `SIGTERM` if the harness dies
//! (`PR_SET_PDEATHSIG`); a child is only reaped by `finish`, after its whole
//! group was killed, so a process-group id is never signalled after it could
//! have been reused. Dropping the `Lab` stops every child still running and
//! removes the directory. Every wait is bounded by a deadline and gives up
//! at once when the harness is interrupted (Ctrl-C).

use std::fs::{self, File};
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C, SIGTERM and SIGHUP set a flag that every wait checks, so the
/// harness unwinds through its `Drop` guards instead of leaving children.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            libc::signal(
                sig,
                on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
            );
        }
    }
}

pub fn check_interrupt() -> Result<(), String> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

pub fn after(secs: f64) -> Instant {
    Instant::now() + Duration::from_secs_f64(secs)
}

/// Sleeps until `until` or an interrupt, in short steps.
pub fn sleep_until(until: Instant) -> Result<(), String> {
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// Raises the soft descriptor limit to the hard one (children inherit it);
/// returns the limit now in force.
pub fn raise_nofile_limit() -> Result<u64, String> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(format!("getrlimit: {}", io::Error::last_os_error()));
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(format!(
                    "cannot raise the descriptor limit to {}: {}",
                    lim.rlim_max,
                    io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Which CPU a process belongs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The proxy under test.
    Proxy,
    /// The load generator and the backend application.
    Load,
}

/// The CPUs used for pinning; `None` when fewer than two are available.
#[derive(Clone, Debug)]
pub struct Cpus {
    pub proxy: usize,
    /// wrk, the backend and this harness's client threads.
    pub load: Vec<usize>,
}

/// The first CPU this process may run on for the proxy, and up to `load`
/// of the next ones for the load.
pub fn choose_cpus(load: usize) -> Option<Cpus> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        set
    };
    let mut allowed = (0..libc::CPU_SETSIZE as usize)
        // SAFETY: the index is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) });
    let proxy = allowed.next()?;
    let load: Vec<usize> = allowed.take(load.max(1)).collect();
    if load.is_empty() {
        return None;
    }
    Some(Cpus { proxy, load })
}

fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: plain data, indexes below CPU_SETSIZE (they came from the mask).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        set
    }
}

/// Pins the calling thread.
pub fn pin_current_thread(cpus: &[usize]) -> Result<(), String> {
    let set = cpu_set(cpus);
    // SAFETY: a valid set of the size passed.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(format!(
            "cannot pin to CPUs {cpus:?}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// CPU time (user + system) `pid` has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| (utime + stime) as f64 / hz as f64)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcId(usize);

struct Proc {
    name: String,
    child: Child,
}

pub struct Lab {
    pub dir: PathBuf,
    pub cpus: Option<Cpus>,
    procs: Vec<Option<Proc>>,
    /// Output files of children already finished, by id.
    logs: Vec<PathBuf>,
}

impl Lab {
    pub fn new(cpus: Option<Cpus>) -> Result<Lab, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "swiftiply-compare-{}-{nanos:x}",
            std::process::id()
        ));
        fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Lab {
            dir,
            cpus,
            procs: Vec::new(),
            logs: Vec::new(),
        })
    }

    pub fn cpu(&self, place: Place) -> Option<Vec<usize>> {
        match (&self.cpus, place) {
            (Some(c), Place::Proxy) => Some(vec![c.proxy]),
            (Some(c), Place::Load) => Some(c.load.clone()),
            _ => None,
        }
    }

    /// Writes `text` to a file in the lab directory; returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Starts `cmd` in its own process group, pinned as `place` says, with
    /// stdout and stderr together in a file of the lab directory.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, place: Place) -> Result<ProcId, String> {
        let n = self.procs.len();
        let log = self.dir.join(format!("{n:03}-{name}.log"));
        let out =
            File::create(&log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("cannot duplicate a descriptor: {e}"))?;
        let set = self.cpu(place).map(|cpus| cpu_set(&cpus));
        // SAFETY: getpid is always safe.
        let parent = unsafe { libc::getpid() };
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1); // the harness is already gone
                }
                if let Some(set) = &set {
                    let size = std::mem::size_of::<libc::cpu_set_t>();
                    if libc::sched_setaffinity(0, size, set) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({}): {e}", describe(&cmd)))?;
        self.procs.push(Some(Proc {
            name: name.to_string(),
            child,
        }));
        self.logs.push(log);
        Ok(ProcId(n))
    }

    pub fn pid(&self, id: ProcId) -> Option<u32> {
        self.procs[id.0].as_ref().map(|p| p.child.id())
    }

    /// The output so far (or in full, once finished).
    pub fn output(&self, id: ProcId) -> String {
        fs::read(&self.logs[id.0])
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the output, for error messages.
    pub fn output_tail(&self, id: ProcId, n: usize) -> String {
        let text = self.output(id);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n    ");
        if tail.is_empty() {
            "(no output)".into()
        } else {
            format!("    {tail}")
        }
    }

    /// Whether the child has exited (without reaping it).
    pub fn exited(&self, id: ProcId) -> bool {
        match &self.procs[id.0] {
            Some(p) => exited_unreaped(p.child.id()),
            None => true,
        }
    }

    /// An error naming the child and showing its last output lines, if it
    /// has exited.
    pub fn check_alive(&self, id: ProcId) -> Result<(), String> {
        if self.exited(id) {
            let name = self.procs[id.0].as_ref().map_or("a child", |p| &p.name);
            return Err(format!(
                "{name} exited unexpectedly; its last output:\n{}",
                self.output_tail(id, 15)
            ));
        }
        Ok(())
    }

    /// Waits until `found` accepts the child's output; fails if the child
    /// exits first or the deadline passes.
    pub fn wait_for_output(
        &self,
        id: ProcId,
        what: &str,
        until: Instant,
        found: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        loop {
            check_interrupt()?;
            let text = self.output(id);
            if found(&text) {
                return Ok(text);
            }
            self.check_alive(id)?;
            if Instant::now() >= until {
                return Err(format!(
                    "timed out waiting for {what}; output so far:\n{}",
                    self.output_tail(id, 15)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the child to exit by itself (killing it at the deadline).
    pub fn wait_exit(&mut self, id: ProcId, until: Instant) -> Result<ExitStatus, String> {
        loop {
            if let Err(e) = check_interrupt() {
                self.finish(id);
                return Err(e);
            }
            if self.exited(id) {
                return self
                    .finish(id)
                    .ok_or_else(|| "lost track of a child".to_string());
            }
            if Instant::now() >= until {
                let name = self.procs[id.0]
                    .as_ref()
                    .map_or(String::new(), |p| p.name.clone());
                self.finish(id);
                return Err(format!("{name} did not finish in time; killed it"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the child's process group (if still running).
    pub fn signal(&self, id: ProcId, sig: libc::c_int) {
        if let Some(p) = &self.procs[id.0] {
            // SAFETY: the group leader is not reaped yet, so the id is ours.
            unsafe {
                libc::kill(-(p.child.id() as libc::pid_t), sig);
            }
        }
    }

    /// Stops the child: SIGTERM to its group, up to 3 s, then SIGKILL to
    /// the group; reaps it. Returns its exit status (`None` if it was
    /// already finished).
    pub fn finish(&mut self, id: ProcId) -> Option<ExitStatus> {
        let mut p = self.procs[id.0].take()?;
        let pid = p.child.id();
        let group = -(pid as libc::pid_t);
        if !exited_unreaped(pid) {
            // SAFETY: signalling our own, unreaped group.
            unsafe { libc::kill(group, libc::SIGTERM) };
            let until = after(3.0);
            while !exited_unreaped(pid) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // Whatever is left of the group (nginx workers, a stuck leader).
        // SAFETY: the leader is not reaped yet, so the group id is still ours.
        unsafe { libc::kill(group, libc::SIGKILL) };
        p.child.wait().ok()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.finish(ProcId(i));
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether `pid` (our child) has exited, leaving it a zombie to reap later.
fn exited_unreaped(pid: u32) -> bool {
    // SAFETY: siginfo_t is plain data; waitid with WNOWAIT does not reap.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let rc = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        rc != 0 || info.si_pid() != 0
    }
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A free loopback port: bound to port 0, then released.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

/// VmRSS of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| format!("no VmRSS line in {path}"))
}

/// The kernel's count of connections dropped because a listen queue was
/// full (TcpExt ListenOverflows, all sockets).
pub fn listen_overflows() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/netstat").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names
        .split_whitespace()
        .position(|n| n == "ListenOverflows")?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// The first child process of `parent` (nginx's worker of its master).
pub fn child_of(parent: u32) -> Option<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name is in parentheses and may contain spaces.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found.into_iter().min()
}

/// An executable by name on PATH, or in the sbin directories that PATH
/// often lacks for non-root users.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first line a command prints (stdout, else stderr), for version
/// strings; gives up after 5 s.
pub fn first_line_of(program: &Path, args: &[&str]) -> String {
    match run_briefly(program, args) {
        Ok((_, out, err)) => {
            let text = if out.trim().is_empty() { err } else { out };
            text.lines().next().unwrap_or("").trim().to_string()
        }
        Err(e) => format!("({e})"),
    }
}

/// Stdout of a command that succeeded within 5 s.
pub fn stdout_of(program: &Path, args: &[&str]) -> Option<String> {
    match run_briefly(program, args) {
        Ok((true, out, _)) => Some(out),
        _ => None,
    }
}

/// Runs a short command: (success, stdout, stderr); killed after 5 s.
fn run_briefly(program: &Path, args: &[&str]) -> Result<(bool, String, String), String> {
    use std::io::Read;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run: {e}"))?;
    let until = after(5.0);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("did not finish within 5 s".into());
            }
        }
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    Ok((status.success(), out, err))
}
