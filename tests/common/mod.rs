#![allow(clippy::result_large_err)] // test helpers: a rich error beats a small one here
//! Shared harness for the end-to-end tests: runs the real `swiftiply` binary,
//! plays backends (which connect *to* the proxy) and raw HTTP clients over
//! loopback sockets. Standard library only.
//!
//! Every blocking operation has a deadline: sockets carry read/write timeouts
//! (`IO_TIMEOUT`), waits poll with deadlines, and child processes are killed
//! when a test ends.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Read/write timeout on every test socket: no test can hang on I/O longer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Proxy::start` waits for `swiftiply: ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub const BIN: &str = env!("CARGO_BIN_EXE_swiftiply");

// ---------------------------------------------------------------------------
// Temp dirs and config text
// ---------------------------------------------------------------------------

static UNIQUE: AtomicUsize = AtomicUsize::new(0);

/// A unique directory under `std::env::temp_dir()`, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!(
            "swiftiply-test-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Builds a config: defaults for `cluster_address` (127.0.0.1),
/// `cluster_port` (0), `timeout` (5) and `logger` (log_level 3) unless `top`
/// already sets them; `top` is top-level YAML lines; each `sections` entry is
/// the YAML lines of one `map` entry (unindented, one key per line).
pub fn config(top: &str, sections: &[&str]) -> String {
    let has = |key: &str| {
        top.lines()
            .any(|l| l.trim_start() == l && l.starts_with(&format!("{key}:")))
    };
    let mut out = String::new();
    if !has("cluster_address") {
        out.push_str("cluster_address: 127.0.0.1\n");
    }
    if !has("cluster_port") {
        out.push_str("cluster_port: 0\n");
    }
    if !has("timeout") {
        out.push_str("timeout: 5\n");
    }
    if !has("logger") {
        out.push_str("logger:\n  log_level: 3\n");
    }
    for l in top.lines() {
        if !l.trim().is_empty() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out.push_str("map:\n");
    for s in sections {
        let mut first = true;
        for l in s.lines() {
            if l.trim().is_empty() {
                continue;
            }
            out.push_str(if first { "  - " } else { "    " });
            out.push_str(l.trim());
            out.push('\n');
            first = false;
        }
    }
    out
}

/// One default section for host `app.test`, backends on a free port.
/// `extra` is more section keys (one per line); `top` more top-level keys.
pub fn one_section(top: &str, extra: &str) -> String {
    config(
        top,
        &[&format!(
            "incoming: app.test\noutgoing: 127.0.0.1:0\ndefault: true\n{extra}"
        )],
    )
}

/// A 12-character backend id: `prefix` then `n` zero-padded.
pub fn id12(prefix: &str, n: usize) -> String {
    assert!(prefix.len() < 12);
    let w = 12 - prefix.len();
    let s = format!("{prefix}{n:0w$}");
    assert_eq!(s.len(), 12, "id {s:?} is not 12 characters");
    s
}

/// A process-unique token to tag requests with.
pub fn token(tag: &str) -> String {
    format!("{tag}-{}", UNIQUE.fetch_add(1, Ordering::SeqCst))
}

// ---------------------------------------------------------------------------
// The proxy process
// ---------------------------------------------------------------------------

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    eof: bool,
}

type SharedLog = Arc<(Mutex<LogState>, Condvar)>;

/// A running `swiftiply CONFIG.yml`; killed on drop.
pub struct Proxy {
    child: Child,
    pub dir: TempDir,
    pub config_path: PathBuf,
    log: SharedLog,
    clients: Vec<SocketAddr>,
    sections: BTreeMap<usize, Vec<SocketAddr>>,
    /// The test made the proxy exit (`wait_exit`).
    exit_expected: bool,
}

fn spawn_line_reader<R: Read + Send + 'static>(r: R, log: SharedLog) {
    thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = String::from_utf8_lossy(&line)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    let (m, cv) = &*log;
                    m.lock().unwrap().lines.push(s);
                    cv.notify_all();
                }
            }
        }
        let (m, cv) = &*log;
        m.lock().unwrap().eof = true;
        cv.notify_all();
    });
}

/// How `Proxy::launch` passes the config file.
#[derive(Clone, Copy)]
enum Launch {
    Positional,
    DashC,
}

fn after<'a>(line: &'a str, marker: &str) -> Option<&'a str> {
    line.find(marker).map(|i| line[i + marker.len()..].trim())
}

impl Proxy {
    /// Writes `yaml` to a fresh temp dir, starts the proxy on it and waits
    /// (up to 10 s) for `swiftiply: ready`. Panics, with the proxy's stderr,
    /// if it exits or does not become ready.
    pub fn start(yaml: &str) -> Proxy {
        match Proxy::try_start(yaml) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    pub fn try_start(yaml: &str) -> Result<Proxy, String> {
        Proxy::launch(Some(yaml), Launch::Positional, &[])
    }

    /// Starts the proxy with extra environment variables (e.g. RUST_LOG).
    pub fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Proxy {
        Proxy::launch(Some(yaml), Launch::Positional, env).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the proxy as `swiftiply -c CONFIG`.
    pub fn start_dash_c(yaml: &str) -> Proxy {
        Proxy::launch(Some(yaml), Launch::DashC, &[]).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts the proxy with no arguments at all (the built-in default).
    pub fn try_start_builtin_default() -> Result<Proxy, String> {
        Proxy::launch(None, Launch::Positional, &[])
    }

    fn launch(yaml: Option<&str>, how: Launch, env: &[(&str, &str)]) -> Result<Proxy, String> {
        let dir = TempDir::new("proxy");
        let config_path = dir.write("config.yml", yaml.unwrap_or(""));
        let args: Vec<&OsStr> = match (yaml, how) {
            (None, _) => vec![],
            (Some(_), Launch::Positional) => vec![config_path.as_os_str()],
            (Some(_), Launch::DashC) => vec![OsStr::new("-c"), config_path.as_os_str()],
        };
        let yaml = yaml.unwrap_or("(no config file)");
        let mut child = Command::new(BIN)
            .args(&args)
            .current_dir(&dir.path)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot spawn {BIN}: {e}"))?;
        let log: SharedLog = Arc::new((Mutex::new(LogState::default()), Condvar::new()));
        spawn_line_reader(child.stderr.take().unwrap(), log.clone());

        let deadline = Instant::now() + READY_TIMEOUT;
        let mut exited = None;
        loop {
            {
                let (m, cv) = &*log;
                let st = m.lock().unwrap();
                if st.lines.iter().any(|l| l.contains("swiftiply: ready")) {
                    break;
                }
                if exited.is_some() && st.eof {
                    break;
                }
                let _ = cv.wait_timeout(st, Duration::from_millis(50)).unwrap();
            }
            if exited.is_none() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    // let the reader collect the remaining stderr (bounded)
                    let until = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < until && !log.0.lock().unwrap().eof {
                        thread::sleep(Duration::from_millis(10));
                    }
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let text = log.0.lock().unwrap().lines.join("\n");
                return Err(format!(
                    "swiftiply did not print `swiftiply: ready` within {READY_TIMEOUT:?}\n\
                     config:\n{yaml}\nstderr:\n{text}"
                ));
            }
        }
        let lines = log.0.lock().unwrap().lines.clone();
        if !lines.iter().any(|l| l.contains("swiftiply: ready")) {
            let _ = child.wait();
            return Err(format!(
                "swiftiply exited early ({:?})\nconfig:\n{yaml}\nstderr:\n{}",
                exited,
                lines.join("\n")
            ));
        }

        let mut clients = Vec::new();
        let mut sections: BTreeMap<usize, Vec<SocketAddr>> = BTreeMap::new();
        for l in &lines {
            if let Some(a) = after(l, "swiftiply: clients listening on ") {
                clients.push(
                    a.parse()
                        .unwrap_or_else(|e| panic!("bad address in {l:?}: {e}")),
                );
            } else if let Some(rest) = after(l, "swiftiply: section ") {
                if let Some((n, a)) = rest.split_once(" backends listening on ") {
                    let n: usize = n
                        .trim()
                        .parse()
                        .unwrap_or_else(|e| panic!("bad section number in {l:?}: {e}"));
                    let a: SocketAddr = a
                        .trim()
                        .parse()
                        .unwrap_or_else(|e| panic!("bad address in {l:?}: {e}"));
                    sections.entry(n).or_default().push(a);
                }
            }
        }
        if clients.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "no `swiftiply: clients listening on` line before ready:\n{}",
                lines.join("\n")
            ));
        }
        Ok(Proxy {
            child,
            dir,
            config_path,
            log,
            clients,
            sections,
            exit_expected: false,
        })
    }

    /// The first client listener.
    pub fn client_addr(&self) -> SocketAddr {
        self.clients[0]
    }

    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.clients
    }

    /// The first outgoing (backend) address of `section` (0-based `map` index).
    pub fn backend_addr(&self, section: usize) -> SocketAddr {
        self.backend_addrs(section)[0]
    }

    pub fn backend_addrs(&self, section: usize) -> Vec<SocketAddr> {
        match self.sections.get(&section) {
            Some(v) if !v.is_empty() => v.clone(),
            _ => panic!(
                "no `section {section} backends listening on` line; stderr:\n{}",
                self.stderr_text()
            ),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn proc_status_kb(&self, key: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap_or_else(|e| panic!("read /proc/{}/status: {e}", self.pid()));
        for l in text.lines() {
            if let Some(v) = l.strip_prefix(key) {
                let v = v.trim_start_matches(':').trim();
                let num = v.split_whitespace().next().unwrap_or("0");
                return num.parse().unwrap_or(0);
            }
        }
        panic!("{key} not in /proc/{}/status", self.pid())
    }

    /// Current resident set size in KiB (VmRSS).
    pub fn rss_kb(&self) -> u64 {
        self.proc_status_kb("VmRSS")
    }

    /// Peak resident set size in KiB (VmHWM).
    pub fn peak_rss_kb(&self) -> u64 {
        self.proc_status_kb("VmHWM")
    }

    /// Everything the proxy wrote to stderr so far, one line per line.
    pub fn stderr_text(&self) -> String {
        self.log.0.lock().unwrap().lines.join("\n")
    }

    /// Waits until a stderr line contains `substr`; false at the deadline.
    pub fn wait_for_log(&self, substr: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut st = m.lock().unwrap();
        loop {
            if st.lines.iter().any(|l| l.contains(substr)) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.eof {
                return st.lines.iter().any(|l| l.contains(substr));
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Sends `signal` (libc::SIGHUP, SIGTERM, ...) to the proxy.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain system call on our own child's pid.
        let rc = unsafe { libc::kill(self.pid() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// How many stderr lines contain `substr`.
    pub fn log_count(&self, substr: &str) -> usize {
        self.log
            .0
            .lock()
            .unwrap()
            .lines
            .iter()
            .filter(|l| l.contains(substr))
            .count()
    }

    /// Waits until at least `n` stderr lines contain `substr`.
    pub fn wait_for_log_count(&self, substr: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.log;
        let mut st = m.lock().unwrap();
        loop {
            let count = st.lines.iter().filter(|l| l.contains(substr)).count();
            if count >= n {
                return true;
            }
            let now = Instant::now();
            if now >= deadline || st.eof {
                return false;
            }
            st = cv.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Writes `yaml` over the config file and sends SIGHUP; returns once
    /// the proxy logged that it reloaded (Ok) or kept its old config (Err,
    /// with the log line).
    pub fn reload(&self, yaml: &str) -> Result<(), String> {
        std::fs::write(&self.config_path, yaml).expect("rewrite the config file");
        let (ok, failed) = (
            "SIGHUP: reloaded",
            "still running on the config loaded before",
        );
        let (ok0, failed0) = (self.log_count(ok), self.log_count(failed));
        self.signal(libc::SIGHUP);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.log_count(ok) > ok0 {
                return Ok(());
            }
            if self.log_count(failed) > failed0 {
                let text = self.stderr_text();
                let line = text
                    .lines()
                    .rev()
                    .find(|l| l.contains(failed))
                    .unwrap_or("");
                return Err(line.to_string());
            }
            self.wait_for_log_count(ok, ok0 + 1, Duration::from_millis(50));
        }
        panic!(
            "no reload outcome logged within 10 s; stderr:\n{}",
            self.stderr_text()
        );
    }

    /// Waits for the proxy to exit (after a signal, say); the exit is then
    /// expected, not a failure of the test. None at the deadline.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit_expected = true;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Panics (with stderr) if the proxy process has exited.
    pub fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            thread::sleep(Duration::from_millis(100));
            panic!(
                "swiftiply exited unexpectedly ({status}); stderr:\n{}",
                self.stderr_text()
            );
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let exited = self.child.try_wait().ok().flatten();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "---- swiftiply stderr (pid {}) ----\n{}\n---- end of swiftiply stderr ----",
                self.child.id(),
                self.stderr_text()
            );
        } else if let (Some(status), false) = (exited, self.exit_expected) {
            panic!(
                "swiftiply exited during the test ({status}); stderr:\n{}",
                self.stderr_text()
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Running the CLI to completion
// ---------------------------------------------------------------------------

pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl std::fmt::Debug for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the binary with `args`, killing it (and panicking) if it has not
/// exited within `timeout`.
pub fn run_cli<S: AsRef<OsStr>>(args: &[S], timeout: Duration) -> CliOutput {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
            panic!(
                "`swiftiply {}` did not exit within {timeout:?}; stderr:\n{stderr}",
                args.iter()
                    .map(|a| a.as_ref().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        thread::sleep(Duration::from_millis(20));
    };
    CliOutput {
        code: status.code(),
        stdout: String::from_utf8_lossy(&t_out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&t_err.join().unwrap()).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// HTTP parsing over a buffered connection
// ---------------------------------------------------------------------------

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn eof(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg.into())
}

fn map_timeout(e: io::Error) -> io::Error {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            io::Error::new(io::ErrorKind::TimedOut, "read timed out (test deadline)")
        }
        _ => e,
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// A TCP stream with a read buffer, so that bytes read past one message stay
/// available for the next (pipelining, keep-alive).
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    scratch: Vec<u8>,
    capture: Option<Vec<u8>>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        Conn {
            stream,
            buf: Vec::new(),
            start: 0,
            scratch: vec![0; 64 * 1024],
            capture: None,
        }
    }

    pub fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        Ok(Conn::new(s))
    }

    /// Bytes read from the socket but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        let v = self.buf[self.start..self.start + n].to_vec();
        if let Some(c) = &mut self.capture {
            c.extend_from_slice(&v);
        }
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        v
    }

    /// One read from the socket into the buffer; Ok(0) at EOF.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        loop {
            match self.stream.read(&mut self.scratch) {
                Ok(n) => {
                    self.buf.extend_from_slice(&self.scratch[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(map_timeout(e)),
            }
        }
    }

    /// Reads through `delim` (returned included). Ok(None): EOF before any byte.
    pub fn read_until(&mut self, delim: &[u8], limit: usize) -> io::Result<Option<Vec<u8>>> {
        let mut searched: usize = 0;
        loop {
            let avail = &self.buf[self.start..];
            let from = searched.saturating_sub(delim.len());
            if let Some(i) = find(&avail[from..], delim) {
                return Ok(Some(self.take(from + i + delim.len())));
            }
            searched = avail.len();
            if avail.len() > limit {
                return Err(invalid(format!(
                    "no {:?} within {limit} bytes",
                    String::from_utf8_lossy(delim)
                )));
            }
            let had = avail.len();
            if self.fill()? == 0 {
                if had == 0 {
                    return Ok(None);
                }
                return Err(eof(format!(
                    "connection closed in the middle of a line/head: {:?}",
                    String::from_utf8_lossy(self.buffered())
                )));
            }
        }
    }

    /// One CRLF-terminated line, without the CRLF.
    pub fn read_line(&mut self, limit: usize) -> io::Result<Vec<u8>> {
        match self.read_until(b"\r\n", limit + 2)? {
            Some(mut l) => {
                l.truncate(l.len() - 2);
                Ok(l)
            }
            None => Err(eof("connection closed where a line was expected")),
        }
    }

    /// Up to `max` body bytes to `sink` (buffered ones first, then one read
    /// straight from the socket). Ok(0) at EOF.
    pub fn read_some(&mut self, max: usize, sink: &mut dyn FnMut(&[u8])) -> io::Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        if self.start < self.buf.len() {
            let n = max.min(self.buf.len() - self.start);
            let piece = self.take(n);
            sink(&piece);
            return Ok(n);
        }
        let want = max.min(self.scratch.len());
        let n = loop {
            match self.stream.read(&mut self.scratch[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(map_timeout(e)),
            }
        };
        if n > 0 {
            if let Some(c) = &mut self.capture {
                c.extend_from_slice(&self.scratch[..n]);
            }
            sink(&self.scratch[..n]);
        }
        Ok(n)
    }

    pub fn read_exact_body(&mut self, mut n: u64, sink: &mut dyn FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            let want = n.min(1 << 30) as usize;
            let got = self.read_some(want, sink)?;
            if got == 0 {
                return Err(eof(format!(
                    "connection closed with {n} body bytes still expected"
                )));
            }
            n -= got as u64;
        }
        Ok(())
    }

    pub fn read_to_close(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let got = self.read_some(1 << 20, sink)?;
            if got == 0 {
                return Ok(total);
            }
            total += got as u64;
        }
    }

    /// Decodes a chunked body; payload to `sink`; returns the trailer lines
    /// (each with its CRLF).
    pub fn read_chunked(&mut self, sink: &mut dyn FnMut(&[u8])) -> io::Result<Vec<u8>> {
        loop {
            let line = self.read_line(4096)?;
            let s = String::from_utf8_lossy(&line).into_owned();
            let size_str = s.split(';').next().unwrap_or("").trim();
            if size_str.is_empty() || !size_str.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(format!("bad chunk-size line {s:?}")));
            }
            let size = u64::from_str_radix(size_str, 16)
                .map_err(|_| invalid(format!("bad chunk-size line {s:?}")))?;
            if size == 0 {
                let mut trailers = Vec::new();
                loop {
                    let l = self.read_line(16384)?;
                    if l.is_empty() {
                        return Ok(trailers);
                    }
                    trailers.extend_from_slice(&l);
                    trailers.extend_from_slice(b"\r\n");
                }
            }
            self.read_exact_body(size, sink)?;
            let end = self.read_line(0)?;
            if !end.is_empty() {
                return Err(invalid("chunk data not followed by CRLF"));
            }
        }
    }

    /// Reads a body of the given framing to `sink`; returns the trailers.
    pub fn read_body(
        &mut self,
        framing: Framing,
        sink: &mut dyn FnMut(&[u8]),
    ) -> io::Result<Vec<u8>> {
        match framing {
            Framing::None => Ok(Vec::new()),
            Framing::Length(n) => self.read_exact_body(n, sink).map(|_| Vec::new()),
            Framing::Chunked => self.read_chunked(sink),
            Framing::UntilClose => self.read_to_close(sink).map(|_| Vec::new()),
        }
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes `bytes` in pieces of the sizes in `pieces` (cycled), flushing
    /// and pausing `pause` between pieces.
    pub fn write_split(
        &mut self,
        bytes: &[u8],
        pieces: &[usize],
        pause: Duration,
    ) -> io::Result<()> {
        let mut i = 0;
        let mut k = 0;
        while i < bytes.len() {
            let n = pieces[k % pieces.len()].max(1).min(bytes.len() - i);
            self.stream.write_all(&bytes[i..i + n])?;
            self.stream.flush()?;
            i += n;
            k += 1;
            if i < bytes.len() && !pause.is_zero() {
                thread::sleep(pause);
            }
        }
        Ok(())
    }

    /// True if the peer closed (EOF or reset) within `timeout`. Bytes that
    /// arrive meanwhile are kept in the buffer and waiting goes on.
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let result = loop {
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            let step = (deadline - now).min(Duration::from_millis(100));
            let _ = self
                .stream
                .set_read_timeout(Some(step.max(Duration::from_millis(1))));
            match self.stream.read(&mut self.scratch) {
                Ok(0) => break true,
                Ok(n) => {
                    let chunk = self.scratch[..n].to_vec();
                    self.buf.extend_from_slice(&chunk);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => break true,
            }
        };
        let _ = self.stream.set_read_timeout(Some(IO_TIMEOUT));
        result
    }
}

/// Parsed start line and header fields of a message head.
fn parse_head(raw: &[u8]) -> io::Result<(String, Vec<(String, String)>)> {
    let text = String::from_utf8_lossy(raw);
    let text = text
        .strip_suffix("\r\n\r\n")
        .ok_or_else(|| invalid("head does not end with CRLF CRLF"))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for l in lines {
        let (name, value) = l
            .split_once(':')
            .ok_or_else(|| invalid(format!("header line without colon: {l:?}")))?;
        headers.push((
            name.to_string(),
            value.trim_matches([' ', '\t']).to_string(),
        ));
    }
    Ok((first, headers))
}

pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub fn headers_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Whether any `name` header lists `token` (comma-separated, case-insensitive).
pub fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers_all(headers, name)
        .iter()
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn request_framing(headers: &[(String, String)]) -> io::Result<Framing> {
    let te = headers_all(headers, "transfer-encoding");
    if !te.is_empty() {
        let last = te
            .last()
            .unwrap()
            .split(',')
            .next_back()
            .unwrap_or("")
            .trim();
        if last.eq_ignore_ascii_case("chunked") {
            return Ok(Framing::Chunked);
        }
        return Err(invalid(format!("request with Transfer-Encoding {te:?}")));
    }
    match header(headers, "content-length") {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Framing::Length)
            .map_err(|_| invalid(format!("bad Content-Length {v:?}"))),
        None => Ok(Framing::None),
    }
}

fn response_framing(status: u16, request_was_head: bool, headers: &[(String, String)]) -> Framing {
    if request_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
        return Framing::None;
    }
    let te = headers_all(headers, "transfer-encoding");
    if !te.is_empty() {
        let last = te
            .last()
            .unwrap()
            .split(',')
            .next_back()
            .unwrap_or("")
            .trim();
        if last.eq_ignore_ascii_case("chunked") {
            return Framing::Chunked;
        }
        return Framing::UntilClose;
    }
    match header(headers, "content-length").and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    }
}

// ---------------------------------------------------------------------------
// Requests (as a backend sees them)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct RequestHead {
    /// The head byte for byte, blank line included.
    pub head: Vec<u8>,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn framing(&self) -> io::Result<Framing> {
        request_framing(&self.headers)
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    /// The head byte for byte, blank line included.
    pub head: Vec<u8>,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Head and body exactly as they came over the wire.
    pub raw: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        headers_all(&self.headers, name)
    }
    pub fn head_str(&self) -> String {
        String::from_utf8_lossy(&self.head).into_owned()
    }
}

/// Reads one request head. Ok(None): the connection closed cleanly first.
pub fn read_request_head(conn: &mut Conn) -> io::Result<Option<RequestHead>> {
    let raw = match conn.read_until(b"\r\n\r\n", 1 << 20)? {
        Some(r) => r,
        None => return Ok(None),
    };
    let (first, headers) = parse_head(&raw)?;
    let mut parts = first.splitn(3, ' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let version = parts.next().unwrap_or("").to_string();
    if method.is_empty() || target.is_empty() || !version.starts_with("HTTP/") {
        return Err(invalid(format!("bad request line {first:?}")));
    }
    Ok(Some(RequestHead {
        head: raw,
        method,
        target,
        version,
        headers,
    }))
}

/// Reads the body that belongs to `h` (Content-Length or chunked).
pub fn read_request_body(conn: &mut Conn, h: RequestHead) -> io::Result<Request> {
    let framing = h.framing()?;
    conn.capture = Some(Vec::new());
    let mut body = Vec::new();
    let res = conn.read_body(framing, &mut |b: &[u8]| body.extend_from_slice(b));
    let raw_body = conn.capture.take().unwrap_or_default();
    res?;
    let mut raw = h.head.clone();
    raw.extend_from_slice(&raw_body);
    Ok(Request {
        head: h.head,
        method: h.method,
        target: h.target,
        version: h.version,
        headers: h.headers,
        body,
        raw,
    })
}

/// Reads one complete request. Ok(None): the connection closed cleanly first.
pub fn read_request(conn: &mut Conn) -> io::Result<Option<Request>> {
    match read_request_head(conn)? {
        None => Ok(None),
        Some(h) => read_request_body(conn, h).map(Some),
    }
}

// ---------------------------------------------------------------------------
// Responses (as a client sees them)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub raw_head: Vec<u8>,
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn framing(&self, request_was_head: bool) -> Framing {
        response_framing(self.status, request_was_head, &self.headers)
    }
}

#[derive(Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    /// Decoded body.
    pub body: Vec<u8>,
    /// The head byte for byte.
    pub raw_head: Vec<u8>,
    pub framing: Framing,
    /// Trailer lines of a chunked body.
    pub trailers: Vec<u8>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let shown: String = body.chars().take(600).collect();
        write!(
            f,
            "Response {{ {:?} framing {:?}, body ({} bytes) {:?}{} }}",
            String::from_utf8_lossy(&self.raw_head),
            self.framing,
            self.body.len(),
            shown,
            if body.chars().count() > 600 {
                "…"
            } else {
                ""
            }
        )
    }
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        headers_all(&self.headers, name)
    }
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
    /// `Connection` lists `close`.
    pub fn says_close(&self) -> bool {
        has_token(&self.headers, "connection", "close")
    }
    pub fn says_keep_alive(&self) -> bool {
        has_token(&self.headers, "connection", "keep-alive")
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn body_contains(&self, s: &str) -> bool {
        find(&self.body, s.as_bytes()).is_some()
    }
}

/// A response that could not be read to its end, with what was read.
pub struct ReadError {
    pub error: io::Error,
    pub partial: Option<Response>,
}

impl std::fmt::Debug for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (partial: {:?})", self.error, self.partial)
    }
}

pub fn read_response_head(conn: &mut Conn) -> io::Result<Option<ResponseHead>> {
    let raw = match conn.read_until(b"\r\n\r\n", 1 << 20)? {
        Some(r) => r,
        None => return Ok(None),
    };
    let (first, headers) = parse_head(&raw)?;
    let mut parts = first.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_string();
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("bad status line {first:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("bad status line {first:?}")));
    }
    Ok(Some(ResponseHead {
        raw_head: raw,
        version,
        status,
        reason,
        headers,
    }))
}

pub fn try_read_response(conn: &mut Conn, request_was_head: bool) -> Result<Response, ReadError> {
    let h = match read_response_head(conn) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(ReadError {
                error: eof("connection closed before any response byte"),
                partial: None,
            })
        }
        Err(error) => {
            return Err(ReadError {
                error,
                partial: None,
            })
        }
    };
    let framing = h.framing(request_was_head);
    let mut body = Vec::new();
    let res = conn.read_body(framing, &mut |b: &[u8]| body.extend_from_slice(b));
    let (trailers, err) = match res {
        Ok(t) => (t, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let resp = Response {
        version: h.version,
        status: h.status,
        reason: h.reason,
        headers: h.headers,
        body,
        raw_head: h.raw_head,
        framing,
        trailers,
    };
    match err {
        None => Ok(resp),
        Some(error) => Err(ReadError {
            error,
            partial: Some(resp),
        }),
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

/// A raw HTTP client connection to the proxy.
pub struct Client {
    pub conn: Conn,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let conn = Conn::connect(addr).unwrap_or_else(|e| panic!("client connect {addr}: {e}"));
        Client { conn }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.conn
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("client send: {e}"));
    }

    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.conn.write_all(bytes)
    }

    /// Reads one response (a 1xx is returned as a response of its own).
    /// Panics if it cannot be read completely.
    pub fn read_response(&mut self, request_was_head: bool) -> Response {
        match try_read_response(&mut self.conn, request_was_head) {
            Ok(r) => r,
            Err(e) => panic!("client could not read a response: {e:?}"),
        }
    }

    pub fn try_read_response(&mut self, request_was_head: bool) -> Result<Response, ReadError> {
        try_read_response(&mut self.conn, request_was_head)
    }

    /// Reads responses until a non-1xx one; returns (interim, final).
    pub fn read_final_response(&mut self, request_was_head: bool) -> (Vec<Response>, Response) {
        let mut interim = Vec::new();
        loop {
            let r = self.read_response(request_was_head);
            if (100..200).contains(&r.status) {
                interim.push(r);
                assert!(interim.len() < 10, "too many 1xx responses");
            } else {
                return (interim, r);
            }
        }
    }

    pub fn request(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes);
        let is_head = bytes.starts_with(b"HEAD ");
        self.read_response(is_head)
    }

    pub fn get(&mut self, host: &str, path: &str) -> Response {
        self.request(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
    }

    /// True if the proxy closed the connection within `timeout`.
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        self.conn.is_closed(timeout)
    }
}

/// One request on a fresh connection; returns the response.
pub fn get_once(addr: SocketAddr, host: &str, path: &str) -> Response {
    let mut c = Client::connect(addr);
    c.get(host, path)
}

/// Asserts the shape every proxy-generated error response must have:
/// the status, a Content-Length matching the body, `Connection: close`.
pub fn assert_error_response(r: &Response, status: u16) {
    assert_eq!(r.status, status, "unexpected status: {r:?}");
    let cl = r
        .header("content-length")
        .unwrap_or_else(|| panic!("error response without Content-Length: {r:?}"));
    assert_eq!(
        cl.trim().parse::<usize>().ok(),
        Some(r.body.len()),
        "Content-Length does not match the body: {r:?}"
    );
    assert!(
        r.says_close(),
        "error response without `Connection: close`: {r:?}"
    );
}

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// The backend preamble: `swiftclient` + id (12) + key length (2 hex) + key.
pub fn handshake_bytes(id: &str, key: &str) -> Vec<u8> {
    assert_eq!(id.len(), 12, "backend id must be 12 characters");
    assert!(key.len() <= 255);
    format!("swiftclient{id}{:02x}{key}", key.len()).into_bytes()
}

/// A backend connection to the proxy.
pub struct Backend {
    pub conn: Conn,
    pub id: String,
}

impl Backend {
    /// Connects to `addr` and sends the handshake in one write.
    pub fn connect(addr: SocketAddr, id: &str, key: &str) -> Backend {
        let mut b = Backend::connect_raw(addr, id, &[]);
        b.write(&handshake_bytes(id, key));
        b
    }

    /// Connects and sends the handshake in pieces of `pieces` bytes (cycled),
    /// pausing `pause` between them.
    pub fn connect_split(
        addr: SocketAddr,
        id: &str,
        key: &str,
        pieces: &[usize],
        pause: Duration,
    ) -> Backend {
        let mut b = Backend::connect_raw(addr, id, &[]);
        b.conn
            .write_split(&handshake_bytes(id, key), pieces, pause)
            .unwrap_or_else(|e| panic!("backend {id}: handshake write: {e}"));
        b
    }

    /// Connects and sends `preamble` as is (for broken handshakes).
    pub fn connect_raw(addr: SocketAddr, id: &str, preamble: &[u8]) -> Backend {
        let conn = Conn::connect(addr).unwrap_or_else(|e| panic!("backend connect {addr}: {e}"));
        let mut b = Backend {
            conn,
            id: id.to_string(),
        };
        if !preamble.is_empty() {
            b.write(preamble);
        }
        b
    }

    pub fn set_read_timeout(&mut self, t: Duration) {
        let _ = self.conn.stream.set_read_timeout(Some(t));
    }

    pub fn read_request(&mut self) -> io::Result<Option<Request>> {
        read_request(&mut self.conn)
    }

    pub fn read_request_head(&mut self) -> io::Result<Option<RequestHead>> {
        read_request_head(&mut self.conn)
    }

    pub fn read_request_body(&mut self, h: RequestHead) -> io::Result<Request> {
        read_request_body(&mut self.conn, h)
    }

    /// Reads one complete request; panics on EOF or error.
    pub fn expect_request(&mut self) -> Request {
        match self.read_request() {
            Ok(Some(r)) => r,
            Ok(None) => panic!(
                "backend {}: proxy closed instead of sending a request",
                self.id
            ),
            Err(e) => panic!("backend {}: reading a request: {e}", self.id),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let id = self.id.clone();
        self.conn
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("backend {id}: write: {e}"));
    }

    pub fn write_split(&mut self, bytes: &[u8], pieces: &[usize], pause: Duration) {
        let id = self.id.clone();
        self.conn
            .write_split(bytes, pieces, pause)
            .unwrap_or_else(|e| panic!("backend {id}: write: {e}"));
    }

    /// A response with a Content-Length body. `status_line` like "200 OK".
    pub fn respond(&mut self, status_line: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut out = format!(
            "HTTP/1.1 {status_line}\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (n, v) in headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        self.write(&bytes);
    }

    /// 200 whose Content-Length body is the raw request (head + framed body);
    /// header `X-Backend: <id>`. No body for HEAD.
    pub fn respond_echo(&mut self, req: &Request) {
        let _ = self.try_respond_echo(req, &[]);
    }

    pub fn try_respond_echo(&mut self, req: &Request, extra: &[(&str, &str)]) -> io::Result<()> {
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {}\r\nContent-Type: text/plain\r\n",
            req.raw.len(),
            self.id
        );
        for (n, v) in extra {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        if req.method != "HEAD" {
            bytes.extend_from_slice(&req.raw);
        }
        self.conn.write_all(&bytes)
    }

    /// Reads one request and echoes it; returns it.
    pub fn echo_one(&mut self) -> Request {
        let r = self.expect_request();
        self.respond_echo(&r);
        r
    }

    /// Echoes up to `n` requests (None: until the proxy closes the
    /// connection or a read times out); returns how many were served.
    pub fn serve_echo(&mut self, n: Option<usize>) -> usize {
        let mut served = 0;
        while n.is_none_or(|n| served < n) {
            match self.read_request() {
                Ok(Some(r)) => {
                    apply_directives(&r.target);
                    if self.try_respond_echo(&r, &[]).is_err() {
                        break;
                    }
                    served += 1;
                }
                _ => break,
            }
        }
        served
    }

    /// A chunked 200: head, then each chunk (with an extension on the first),
    /// then a trailer; every piece written separately with flushes, the
    /// chunk framing itself split, and `pause` between writes.
    pub fn respond_chunked(&mut self, chunks: &[&[u8]], pause: Duration) {
        self.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for (i, c) in chunks.iter().enumerate() {
            let size = if i == 0 {
                format!("{:x};ext=1\r\n", c.len())
            } else {
                format!("{:X}\r\n", c.len())
            };
            thread::sleep(pause);
            let sb = size.as_bytes();
            let mid = sb.len() / 2;
            self.write(&sb[..mid]);
            thread::sleep(pause);
            self.write(&sb[mid..]);
            thread::sleep(pause);
            let half = c.len() / 2;
            self.write(&c[..half]);
            thread::sleep(pause);
            self.write(&c[half..]);
            self.write(b"\r");
            thread::sleep(pause);
            self.write(b"\n");
        }
        thread::sleep(pause);
        self.write(b"0\r\n");
        thread::sleep(pause);
        self.write(b"X-Trailer: yes\r");
        thread::sleep(pause);
        self.write(b"\n\r\n");
    }

    /// A packet-mode (`X-Swiftiply-Close`) 200: the head split inside the
    /// header name, then the packets with awkward splits (1 byte at a time
    /// in places, length fields cut), and the terminator 1 byte at a time.
    pub fn respond_packets(&mut self, packets: &[&[u8]], pause: Duration) {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Swiftiply-Close: 1\r\n\r\n";
        let cut = find(head, b"Swiftiply").unwrap() + 4;
        self.write(&head[..cut]);
        thread::sleep(pause);
        self.write(&head[cut..]);
        let stream = packet_stream(packets);
        let body = &stream[..stream.len() - 8];
        thread::sleep(pause);
        self.write_split(body, AWKWARD, pause);
        for b in &stream[stream.len() - 8..] {
            thread::sleep(pause);
            self.write(&[*b]);
        }
    }

    /// A 200 with neither Content-Length nor Transfer-Encoding, then close.
    pub fn respond_close_delimited(mut self, body: &[u8], pause: Duration) {
        self.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
        let half = body.len() / 2;
        thread::sleep(pause);
        self.write(&body[..half]);
        thread::sleep(pause);
        self.write(&body[half..]);
        drop(self);
    }

    /// Sleeps `delay`, then echoes `req`.
    pub fn respond_slow(&mut self, req: &Request, delay: Duration) {
        thread::sleep(delay);
        self.respond_echo(req);
    }

    /// Reads one request, then closes without answering; returns it.
    pub fn die_after_request(mut self) -> Request {
        let r = self.expect_request();
        drop(self);
        r
    }

    /// True if the proxy closed this backend connection within `timeout`.
    pub fn is_closed(&mut self, timeout: Duration) -> bool {
        self.conn.is_closed(timeout)
    }
}

/// Piece sizes for awkward writes (cycled): many 1-byte pieces, fields cut.
pub const AWKWARD: &[usize] = &[1, 1, 2, 1, 3, 5, 1, 7, 1, 1, 4, 11, 2, 600, 1, 9];

/// Packet-mode body bytes: `%08d` length + payload per packet, then `--------`.
pub fn packet_stream(packets: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        out.extend_from_slice(format!("{:08}", p.len()).as_bytes());
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"--------");
    out
}

/// Echo-backend directives in the request target: `sleep=MS` delays the
/// answer.
pub fn apply_directives(target: &str) {
    for part in target.split(['?', '&', '/']) {
        if let Some(ms) = part.strip_prefix("sleep=") {
            if let Ok(ms) = ms.parse::<u64>() {
                thread::sleep(Duration::from_millis(ms.min(20_000)));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// A farm of echo backends that records what reached them
// ---------------------------------------------------------------------------

/// What an echo backend saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub backend: String,
    pub target: String,
    /// false: only the head had arrived (reported before the body is read);
    /// true: the whole request arrived.
    pub complete: bool,
    /// The head (head-only event) or head + framed body (complete event).
    pub raw: Vec<u8>,
}

impl Seen {
    pub fn contains(&self, s: &str) -> bool {
        find(&self.raw, s.as_bytes()).is_some()
    }
}

static FARM_IDS: AtomicUsize = AtomicUsize::new(1);

/// `n` echo backends in threads. Each reports every request head and every
/// complete request, and answers with `respond_echo` (honouring `sleep=MS`
/// in the target). With `reconnect`, a backend whose connection ends
/// connects again (until the proxy is gone or the farm is dropped).
pub struct EchoFarm {
    rx: Receiver<Seen>,
    stop: Arc<AtomicBool>,
    pub seen: Vec<Seen>,
    pub ids: Vec<String>,
}

impl EchoFarm {
    pub fn start(addr: SocketAddr, key: &str, n: usize, reconnect: bool) -> EchoFarm {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for _ in 0..n {
            let id = id12("echo", FARM_IDS.fetch_add(1, Ordering::SeqCst));
            ids.push(id.clone());
            // Connect synchronously so the caller knows every backend has at
            // least connected (and sent its handshake) when start returns.
            let b = Backend::connect(addr, &id, key);
            let tx: Sender<Seen> = tx.clone();
            let stop = stop.clone();
            let key = key.to_string();
            thread::spawn(move || {
                let started = Instant::now();
                let mut b = Some(b);
                while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(300) {
                    let mut be = match b.take() {
                        Some(be) => be,
                        None => match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                            Ok(s) => {
                                let mut be = Backend {
                                    conn: Conn::new(s),
                                    id: id.clone(),
                                };
                                if be.conn.write_all(&handshake_bytes(&id, &key)).is_err() {
                                    break;
                                }
                                be
                            }
                            Err(_) => break,
                        },
                    };
                    be.set_read_timeout(Duration::from_secs(120));
                    while let Ok(Some(h)) = be.read_request_head() {
                        let _ = tx.send(Seen {
                            backend: id.clone(),
                            target: h.target.clone(),
                            complete: false,
                            raw: h.head.clone(),
                        });
                        let r = match be.read_request_body(h) {
                            Ok(r) => r,
                            Err(_) => break,
                        };
                        let _ = tx.send(Seen {
                            backend: id.clone(),
                            target: r.target.clone(),
                            complete: true,
                            raw: r.raw.clone(),
                        });
                        apply_directives(&r.target);
                        if be.try_respond_echo(&r, &[]).is_err() {
                            break;
                        }
                    }
                    if !reconnect {
                        break;
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            });
        }
        EchoFarm {
            rx,
            stop,
            seen: Vec::new(),
            ids,
        }
    }

    /// Collects events until none arrives for `quiet`.
    pub fn settle(&mut self, quiet: Duration) -> &[Seen] {
        while let Ok(s) = self.rx.recv_timeout(quiet) {
            self.seen.push(s);
        }
        &self.seen
    }

    /// Collects events until `pred` holds for one of them (true) or the
    /// deadline passes (false).
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Seen) -> bool) -> bool {
        if self.seen.iter().any(&pred) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match self.rx.recv_timeout(deadline - now) {
                Ok(s) => {
                    let hit = pred(&s);
                    self.seen.push(s);
                    if hit {
                        return true;
                    }
                }
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Events (heads and complete requests) whose bytes contain `s`.
    pub fn seen_containing(&self, s: &str) -> Vec<&Seen> {
        self.seen.iter().filter(|e| e.contains(s)).collect()
    }

    pub fn complete_requests(&self) -> Vec<&Seen> {
        self.seen.iter().filter(|e| e.complete).collect()
    }
}

impl Drop for EchoFarm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Polls `f` every 20 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Joins a thread, waiting at most `timeout`; panics if it panicked or is
/// still running.
pub fn join_within<T>(h: thread::JoinHandle<T>, timeout: Duration, what: &str) -> T {
    let deadline = Instant::now() + timeout;
    while !h.is_finished() {
        if Instant::now() > deadline {
            panic!("{what}: thread still running after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
    match h.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Appends what arrives on `s` to `got` until the peer closes (true) or
/// `timeout` passes (false).
pub fn receive_to_close(s: &mut TcpStream, got: &mut Vec<u8>, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 16384];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let _ = s.set_read_timeout(Some(deadline - now));
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true, // reset: closed too
        }
    }
}
