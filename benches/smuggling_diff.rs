//! A differential run of the request-smuggling corpus
//! (`tests/smuggling/corpus.txt`) against HAProxy, by hand:
//!
//! ```text
//! cargo bench --bench smuggling_diff -- --run
//! ```
//!
//! Every case is sent, on a fresh client connection, to Swiftiply (a
//! recording backend dialing in) and to HAProxy (`mode http`, in front of a
//! plain listening recording backend). Both backends frame what they
//! receive with a lenient parser (what forgiving servers do) and a strict
//! RFC 9112 one, as `tests/smuggling_corpus.rs` does (the parsers, the
//! recording backend and the client side are shared with it in
//! `tests/smuggling/harness.rs`). For each case and proxy
//! the run records whether the proxy refused (its own status, nothing
//! reached the backend), what requests the backend framed, and any desync
//! (the two parsers disagree, bytes left over after a request, a request
//! line inside a body); then it prints a summary of where the two proxies
//! agree and where not, and writes every case's details to `--out`.
//!
//! Without `--run` (as `cargo test --all-targets` runs it) it only prints
//! its usage. Loopback only; every socket has a timeout, the run stops
//! itself (`--max-secs`), and both proxies are killed when it ends, panics
//! included.

#[path = "../tests/smuggling/corpus.rs"]
mod corpus;
#[path = "../tests/smuggling/harness.rs"]
mod harness;

use corpus::{Case, Expect};
use harness::{
    find, is_timeout, parse_responses, play_case, request_line_in, sent_target, show, Event,
    Exchange, RecordingBackend, Strict, Timing, What, NO_CASE,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: cargo bench --bench smuggling_diff -- --run [OPTIONS]

Replays every case of tests/smuggling/corpus.txt through Swiftiply and through
HAProxy, each in front of a backend that frames what it receives with a
lenient and a strict (RFC 9112) parser, and compares what each proxy refused,
what it forwarded and how its backend framed it.

  --run             run it (without it, this text is printed and nothing runs)
  --out PATH        the full per-case results (default target/smuggling-diff.txt)
  --only SUBSTRING  only the cases whose name contains it
  --swiftiply PATH  a prebuilt proxy (default: `cargo build --release --bin
                    swiftiply` is run first, then target/release/swiftiply)
  --haproxy PATH    default /usr/sbin/haproxy, else `haproxy` on the PATH
  --serial          one proxy at a time (default: both at once)
  --max-secs N      stop sending cases after N seconds (default 900)";

/// Backend connections dialing in to Swiftiply.
const BACKENDS: usize = 4;
/// Longer than the test's: two proxies run at once.
const TIMING: Timing = Timing {
    quiet: Duration::from_millis(40),
    quiet_nothing_yet: Duration::from_millis(150),
    quiet_pending: Duration::from_millis(300),
    quiet_after_close: Duration::from_millis(15),
    case_max: Duration::from_millis(1500),
    peek: Duration::from_millis(3),
    stuck_after: Duration::from_millis(60),
    settle_max: Duration::from_millis(500),
};

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

struct Options {
    out: Option<PathBuf>,
    only: Option<String>,
    swiftiply: Option<PathBuf>,
    haproxy: Option<PathBuf>,
    serial: bool,
    max_secs: u64,
}

/// `Ok(None)`: nothing to run (usage printed).
fn parse_args(args: Vec<String>) -> Result<Option<Options>, String> {
    let mut run = false;
    let mut o = Options {
        out: None,
        only: None,
        swiftiply: None,
        haproxy: None,
        serial: false,
        max_secs: 900,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match name.as_str() {
            // `cargo bench` adds it.
            "--bench" => {}
            "--run" => run = true,
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--only" => o.only = Some(value()?),
            "--swiftiply" => o.swiftiply = Some(PathBuf::from(value()?)),
            "--haproxy" => o.haproxy = Some(PathBuf::from(value()?)),
            "--serial" => o.serial = true,
            "--max-secs" => {
                let v = value()?;
                o.max_secs = v
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--max-secs: {v:?} is not a positive number"))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if !run {
        println!("smuggling_diff: nothing run.\n\n{USAGE}");
        return Ok(None);
    }
    Ok(Some(o))
}

fn main() {
    let opts = match parse_args(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => return,
        Err(e) => {
            eprintln!("smuggling_diff: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("smuggling_diff: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------
// Running one case against one proxy
// ---------------------------------------------------------------------------

/// The origin form of a target (`http://h/p?q` → `/p?q`, `http://h` → `/`),
/// so that the two proxies' forwarding can be compared.
fn origin_form(t: &[u8]) -> Vec<u8> {
    match find(t, b"://") {
        Some(i) if !t.starts_with(b"/") => {
            let rest = &t[i + 3..];
            match rest.iter().position(|&b| b == b'/' || b == b'?') {
                Some(j) if rest[j] == b'/' => rest[j..].to_vec(),
                Some(j) => [b"/", &rest[j..]].concat(),
                None => b"/".to_vec(),
            }
        }
        _ => t.to_vec(),
    }
}

/// What the client of one case saw, against one proxy.
struct ClientSide {
    exchange: Exchange,
    /// Not run, or the proxy could not be reached.
    error: Option<String>,
}

impl ClientSide {
    fn skipped(why: String) -> ClientSide {
        ClientSide {
            exchange: Exchange::default(),
            error: Some(why),
        }
    }
}

fn run_case(
    addr: SocketAddr,
    be: &RecordingBackend,
    events: &mut Vec<Event>,
    i: usize,
    case: &Case,
) -> ClientSide {
    let started = Instant::now();
    match play_case(addr, be, events, i, &case.bytes) {
        Ok(exchange) => ClientSide {
            exchange,
            error: None,
        },
        Err(e) => ClientSide {
            exchange: Exchange {
                closed: true,
                took: started.elapsed(),
                ..Exchange::default()
            },
            error: Some(format!("cannot connect: {e}")),
        },
    }
}

// ---------------------------------------------------------------------------
// Judging one proxy's handling of one case
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// The proxy answered this (4xx/5xx) itself; nothing reached the backend.
    Refused(u16),
    /// The proxy answered this non-error status itself; nothing reached the
    /// backend.
    Answered(u16),
    /// No response, nothing reached the backend.
    Dropped(&'static str),
    /// No response and the connection still open: the proxy waits for the
    /// rest of an incomplete request (the backend got `.0` bytes of it).
    Waiting(u64),
    /// A request (or, before a refusal, part of one) reached the backend.
    Forwarded,
    /// Not run (deadline, or the proxy could not be reached).
    Skipped(String),
}

impl Verdict {
    fn label(&self) -> String {
        match self {
            Verdict::Refused(s) => format!("refused {s}"),
            Verdict::Answered(s) => format!("answered {s} itself"),
            Verdict::Dropped(why) => format!("dropped ({why})"),
            Verdict::Waiting(0) => "waits for the rest, nothing forwarded".to_string(),
            Verdict::Waiting(n) => format!("waits for the rest, {n} bytes forwarded"),
            Verdict::Forwarded => "forwarded".to_string(),
            Verdict::Skipped(why) => format!("skipped ({why})"),
        }
    }
}

struct Judged {
    verdict: Verdict,
    /// One line per thing the backend framed (method, origin-form target,
    /// body data), for comparing the two proxies.
    framed: Vec<String>,
    /// Framing disagreements (must be none).
    desyncs: Vec<String>,
    /// Requests the lenient parser framed like the strict one would, but
    /// that the strict parser rejects (a grammar violation passed on).
    strict_rejects: Vec<String>,
    /// The client's responses, in one line.
    responses: String,
}

fn judge(case: &Case, cs: &ClientSide, events: &[&Event]) -> Judged {
    let mut framed = Vec::new();
    let mut desyncs = Vec::new();
    let mut strict_rejects = Vec::new();
    let mut reached = cs.exchange.backend_bytes > 0;
    // Something the backend framed (not just part of a request).
    let mut complete = false;
    for e in events {
        match &e.what {
            What::Request(r) => {
                reached = true;
                complete = true;
                framed.push(format!(
                    "{} {} body=\"{}\"",
                    show(&r.method, 20),
                    show(&origin_form(&r.target), 60),
                    show(&r.body, 40)
                ));
                match &r.strict {
                    Strict::Complete(n) if *n == r.raw.len() => {}
                    Strict::Error(why) => strict_rejects
                        .push(format!("strict parser rejects a forwarded request ({why})")),
                    other => desyncs.push(format!(
                        "lenient framed {} bytes, strict {}",
                        r.raw.len(),
                        other.describe()
                    )),
                }
                if !r.leftover.is_empty() {
                    desyncs.push(format!(
                        "bytes left over after a request: \"{}\"",
                        show(&r.leftover, 80)
                    ));
                }
                if let Some(line) = request_line_in(&r.raw[r.head_len..]) {
                    desyncs.push(format!(
                        "a forwarded body holds a request line \"{}\"",
                        show(line, 60)
                    ));
                }
            }
            What::Stuck { bytes, strict, .. } => {
                reached = true;
                complete = true;
                framed.push(format!("STUCK({} bytes)", bytes.len()));
                let why = format!(
                    "lenient parser waits for more bytes, strict {}",
                    strict.describe()
                );
                match strict {
                    // Not a framing the two disagree on, but a request a
                    // strict server would refuse.
                    Strict::Error(_) => strict_rejects.push(why),
                    _ => desyncs.push(why),
                }
            }
            What::Partial { bytes, .. } => {
                reached = true;
                framed.push(format!("PARTIAL({} bytes)", bytes.len()));
            }
            What::Garbage { why, .. } => {
                reached = true;
                complete = true;
                framed.push("GARBAGE".to_string());
                desyncs.push(format!(
                    "the backend got bytes that are not a request ({why})"
                ));
            }
            What::Closed { .. } => {}
        }
    }
    let (resps, rest) = parse_responses(&cs.exchange.received);
    for r in &resps {
        if let Some(t) = &r.target {
            if !sent_target(&case.bytes, t) {
                desyncs.push(format!(
                    "the client got the response to \"{}\", a request it never sent",
                    show(t, 60)
                ));
            }
        }
    }
    let mut responses: Vec<String> = resps
        .iter()
        .map(|r| match &r.target {
            Some(t) => format!("{} from the backend for \"{}\"", r.status, show(t, 60)),
            None => format!("{} from the proxy", r.status),
        })
        .collect();
    if !rest.is_empty() {
        responses.push(format!("then \"{}\"", show(rest, 80)));
    }
    responses.push(if cs.exchange.closed {
        "closed".to_string()
    } else {
        "left open".to_string()
    });
    let first_final = resps.iter().find(|r| r.status >= 200);
    let verdict = if let Some(e) = &cs.error {
        Verdict::Skipped(e.clone())
    } else if !complete && first_final.is_none() && !cs.exchange.closed && rest.is_empty() {
        Verdict::Waiting(cs.exchange.backend_bytes)
    } else if reached {
        Verdict::Forwarded
    } else {
        match first_final {
            Some(r) if r.status >= 400 => Verdict::Refused(r.status),
            Some(r) => Verdict::Answered(r.status),
            None if !rest.is_empty() => Verdict::Dropped("answered with non-HTTP/1 bytes"),
            None if cs.exchange.closed => Verdict::Dropped("closed, no response"),
            None => Verdict::Dropped("no response, left open"),
        }
    };
    Judged {
        verdict,
        framed,
        desyncs,
        strict_rejects,
        responses: responses.join(", "),
    }
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A child process, killed when dropped; its stdout and stderr collected.
struct Proc {
    name: &'static str,
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Proc {
    fn spawn(name: &'static str, mut cmd: Command) -> Result<Proc, String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {name} ({:?}): {e}", cmd.get_program()))?;
        let output = Arc::new(Mutex::new(String::new()));
        let pipes: Vec<Box<dyn Read + Send>> = vec![
            Box::new(child.stdout.take().expect("piped stdout")),
            Box::new(child.stderr.take().expect("piped stderr")),
        ];
        for mut pipe in pipes {
            let output = output.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
                    // Bounded: keep the start (the listening lines).
                    if out.len() < 1 << 20 {
                        out.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        Ok(Proc {
            name,
            child,
            output,
        })
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Err with the exit status and output if it exited.
    fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited ({status}); output:\n{}",
                self.name,
                self.output()
            )),
            Err(e) => Err(format!("cannot wait for {}: {e}", self.name)),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        let p =
            std::env::temp_dir().join(format!("swiftiply-smuggling-diff-{}", std::process::id()));
        std::fs::create_dir_all(&p).map_err(|e| format!("cannot create {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf, String> {
        let p = self.0.join(name);
        std::fs::write(&p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// `target/` (this binary is target/<profile>/deps/smuggling_diff-<hash>).
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// `cargo build --release --bin swiftiply` (at most 30 minutes), then the
/// binary's path.
fn build_swiftiply() -> Result<PathBuf, String> {
    println!("== building: cargo build --release --bin swiftiply");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["build", "--release", "--bin", "swiftiply"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let until = Instant::now() + Duration::from_secs(1800);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for cargo: {e}"))?
        {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the build took over 30 minutes".into());
        }
        thread::sleep(Duration::from_millis(100));
    };
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }
    let bin = target_dir().join("release").join("swiftiply");
    if !bin.is_file() {
        return Err(format!("the build did not produce {}", bin.display()));
    }
    Ok(bin)
}

/// A GET through `addr` until the backend answers it (at most 10 s).
fn warm_up(addr: SocketAddr, proc: &mut Proc) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        proc.check_alive()?;
        let last = match get_once(addr) {
            Ok(true) => return Ok(()),
            Ok(false) => "no backend response".to_string(),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not pass a request to its backend within 10 s (last: {last}); \
                 output:\n{}",
                proc.name,
                proc.output()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn get_once(addr: SocketAddr) -> io::Result<bool> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.set_write_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"GET /warm-up HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => break,
            Err(e) => return Err(e),
        }
        if parse_responses(&got).0.iter().any(|r| r.target.is_some()) {
            return Ok(true);
        }
    }
    Ok(parse_responses(&got).0.iter().any(|r| r.target.is_some()))
}

fn swiftiply_config() -> String {
    "cluster_address: 127.0.0.1
cluster_port: 0
timeout: 5
logger: {log_level: 0}
map:
  - incoming: app.test
    outgoing: 127.0.0.1:0
    default: true
"
    .to_string()
}

/// Swiftiply and its dialing-in backend.
fn start_swiftiply(
    bin: &Path,
    dir: &TempDir,
) -> Result<(Proc, SocketAddr, RecordingBackend), String> {
    let config = dir.write("swiftiply.yml", &swiftiply_config())?;
    let mut cmd = Command::new(bin);
    cmd.arg(&config);
    let mut proc = Proc::spawn("swiftiply", cmd)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = proc.output();
        if out.lines().any(|l| l.trim() == "swiftiply: ready") {
            break out;
        }
        proc.check_alive()?;
        if Instant::now() >= deadline {
            return Err(format!("swiftiply did not report ready in 10 s:\n{out}"));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let find_addr = |prefix: &str| -> Result<SocketAddr, String> {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| format!("no {prefix:?} line in swiftiply's output:\n{out}"))
    };
    let clients = find_addr("swiftiply: clients listening on ")?;
    let backends = find_addr("swiftiply: section 0 backends listening on ")?;
    let be = RecordingBackend::dial_in(backends, BACKENDS, TIMING);
    warm_up(clients, &mut proc)?;
    Ok((proc, clients, be))
}

fn haproxy_config(front: SocketAddr, server: SocketAddr) -> String {
    format!(
        "global
    nbthread 1
    maxconn 256

defaults
    mode http
    maxconn 256
    http-reuse never
    timeout connect 2s
    timeout client 5s
    timeout server 5s

frontend fe
    bind {front}
    default_backend be

backend be
    server s1 {server}
"
    )
}

/// HAProxy and its listening backend; the config it runs with.
fn start_haproxy(
    bin: &Path,
    dir: &TempDir,
) -> Result<(Proc, SocketAddr, RecordingBackend, String), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot bind: {e}"))?;
    let server = listener.local_addr().map_err(|e| e.to_string())?;
    let be = RecordingBackend::listen(listener, TIMING).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    // The free port may be taken between the probe and HAProxy's bind.
    for _ in 0..3 {
        let front: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let config = haproxy_config(front, server);
        let path = dir.write("haproxy.cfg", &config)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-db").arg("-f").arg(&path);
        let mut proc = Proc::spawn("haproxy", cmd)?;
        match warm_up(front, &mut proc) {
            Ok(()) => return Ok((proc, front, be, config)),
            Err(e) => errors.push(e),
        }
    }
    Err(format!("haproxy did not start: {}", errors.join("\n")))
}

fn haproxy_program(opt: Option<&Path>) -> PathBuf {
    if let Some(p) = opt {
        return p.to_path_buf();
    }
    let default = Path::new("/usr/sbin/haproxy");
    if default.is_file() {
        default.to_path_buf()
    } else {
        PathBuf::from("haproxy")
    }
}

fn first_line_of(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).to_string()
                + &String::from_utf8_lossy(&o.stderr);
            text.lines().next().map(str::to_string)
        })
        .unwrap_or_else(|| "(unknown)".into())
}

// ---------------------------------------------------------------------------
// Running all cases against one proxy
// ---------------------------------------------------------------------------

struct ProxyRun {
    judged: Vec<Judged>,
    /// Per case: the backend's events, described.
    details: Vec<Vec<String>>,
    sides: Vec<ClientSide>,
    took: Duration,
}

fn run_all(
    name: &str,
    addr: SocketAddr,
    be: &RecordingBackend,
    cases: &[&Case],
    deadline: Instant,
) -> ProxyRun {
    let started = Instant::now();
    let mut events = Vec::new();
    be.drain(&mut events);
    events.clear();
    let mut sides = Vec::with_capacity(cases.len());
    let mut unreachable = 0;
    for (i, case) in cases.iter().enumerate() {
        if Instant::now() >= deadline {
            sides.push(ClientSide::skipped("the run's deadline passed".into()));
            continue;
        }
        if unreachable >= 3 {
            sides.push(ClientSide::skipped(format!(
                "{name} stopped accepting connections"
            )));
            continue;
        }
        let cs = run_case(addr, be, &mut events, i, case);
        if cs.error.is_some() {
            unreachable += 1;
        } else {
            unreachable = 0;
        }
        if (i + 1) % 100 == 0 {
            eprintln!(
                "  {name}: {} of {} cases, {:.0} s",
                i + 1,
                cases.len(),
                started.elapsed().as_secs_f64()
            );
        }
        sides.push(cs);
    }
    be.shared.case.store(NO_CASE, Ordering::SeqCst);
    thread::sleep(TIMING.quiet);
    be.drain(&mut events);
    let took = started.elapsed();
    let mut judged = Vec::with_capacity(cases.len());
    let mut details = Vec::with_capacity(cases.len());
    for (i, (case, cs)) in cases.iter().zip(&sides).enumerate() {
        let mine: Vec<&Event> = events.iter().filter(|e| e.case == i).collect();
        details.push(mine.iter().map(|e| e.what.describe()).collect());
        judged.push(judge(case, cs, &mine));
    }
    ProxyRun {
        judged,
        details,
        sides,
        took,
    }
}

// ---------------------------------------------------------------------------
// The run and its report
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Class {
    BothRefuse,
    BothWait,
    OneWaits,
    BothForwardSame,
    BothForwardDifferent,
    SwiftiplyRefusesHaproxyForwards,
    SwiftiplyForwardsHaproxyRefuses,
    Skipped,
}

impl Class {
    fn of(s: &Judged, h: &Judged) -> Class {
        match (&s.verdict, &h.verdict) {
            (Verdict::Skipped(_), _) | (_, Verdict::Skipped(_)) => Class::Skipped,
            (Verdict::Waiting(_), Verdict::Waiting(_)) => Class::BothWait,
            (Verdict::Waiting(_), _) | (_, Verdict::Waiting(_)) => Class::OneWaits,
            (Verdict::Forwarded, Verdict::Forwarded) => {
                if s.framed == h.framed {
                    Class::BothForwardSame
                } else {
                    Class::BothForwardDifferent
                }
            }
            (Verdict::Forwarded, _) => Class::SwiftiplyForwardsHaproxyRefuses,
            (_, Verdict::Forwarded) => Class::SwiftiplyRefusesHaproxyForwards,
            _ => Class::BothRefuse,
        }
    }
}

/// The group a case is listed under: its source tag, and for a generated
/// case its template (`smuggler/clte`).
fn group_of(case: &Case) -> String {
    let tag = case.source.split(';').next().unwrap_or("").trim();
    let tag = if tag.starts_with("generated") || tag.is_empty() {
        "-"
    } else {
        tag
    };
    match case.source.split_once("generated: ") {
        Some((_, template)) => {
            let t = template.split(':').next().unwrap_or(template);
            format!("{tag}/{t}")
        }
        None => tag.to_string(),
    }
}

fn expect_label(e: Option<Expect>) -> String {
    match e {
        None => "-".into(),
        Some(Expect::Forwarded) => "forwarded".into(),
        Some(Expect::Refused(None)) => "refused".into(),
        Some(Expect::Refused(Some(s))) => format!("refused {s}"),
    }
}

fn short(j: &Judged) -> String {
    match &j.verdict {
        Verdict::Forwarded => {
            let mut s = format!("forwarded [{}]", j.framed.join(" | "));
            if !j.desyncs.is_empty() {
                s.push_str(&format!(" DESYNC: {}", j.desyncs.join("; ")));
            }
            if !j.strict_rejects.is_empty() {
                s.push_str(&format!(" ({})", j.strict_rejects.join("; ")));
            }
            s
        }
        other => other.label(),
    }
}

fn reason(class: Class, s: &Judged, h: &Judged) -> String {
    match class {
        Class::SwiftiplyRefusesHaproxyForwards => {
            format!("Swiftiply {}; HAProxy {}", s.verdict.label(), short(h))
        }
        Class::SwiftiplyForwardsHaproxyRefuses => {
            format!("Swiftiply {}; HAProxy {}", short(s), h.verdict.label())
        }
        _ => format!("Swiftiply {}; HAProxy {}", short(s), short(h)),
    }
}

fn run(opts: &Options) -> Result<(), String> {
    let all = corpus::load();
    let cases: Vec<&Case> = all
        .iter()
        .filter(|c| opts.only.as_deref().is_none_or(|o| c.name.contains(o)))
        .collect();
    if cases.is_empty() {
        return Err(format!("no case matches {:?}", opts.only));
    }
    let out_path = opts
        .out
        .clone()
        .unwrap_or_else(|| target_dir().join("smuggling-diff.txt"));
    let swiftiply_bin = match &opts.swiftiply {
        Some(p) => p.clone(),
        None => build_swiftiply()?,
    };
    let haproxy_bin = haproxy_program(opts.haproxy.as_deref());
    let haproxy_version = first_line_of(&haproxy_bin, &["-v"])
        .split(" - ")
        .next()
        .unwrap_or_default()
        .to_string();

    let dir = TempDir::new()?;
    let (mut sw_proc, sw_addr, sw_be) = start_swiftiply(&swiftiply_bin, &dir)?;
    let (mut ha_proc, ha_addr, ha_be, ha_config) = start_haproxy(&haproxy_bin, &dir)?;
    let hand = all
        .iter()
        .filter(|c| !c.source.contains("generated:"))
        .count();
    println!(
        "== smuggling corpus: {} cases ({} selected); Swiftiply at {sw_addr}, {} at {ha_addr}",
        all.len(),
        cases.len(),
        haproxy_version
    );

    let started = Instant::now();
    let deadline = started + Duration::from_secs(opts.max_secs);
    let (sw_run, ha_run) = thread::scope(|scope| {
        if opts.serial {
            let s = run_all("swiftiply", sw_addr, &sw_be, &cases, deadline);
            let h = run_all("haproxy", ha_addr, &ha_be, &cases, deadline);
            (s, h)
        } else {
            let s = scope.spawn(|| run_all("swiftiply", sw_addr, &sw_be, &cases, deadline));
            let h = run_all("haproxy", ha_addr, &ha_be, &cases, deadline);
            (s.join().expect("the swiftiply runner panicked"), h)
        }
    });
    let elapsed = started.elapsed();
    let sw_alive = sw_proc.check_alive();
    let ha_alive = ha_proc.check_alive();
    drop(sw_be);
    drop(ha_be);
    drop(sw_proc);
    drop(ha_proc);

    // Classify.
    let classes: Vec<Class> = sw_run
        .judged
        .iter()
        .zip(&ha_run.judged)
        .map(|(s, h)| Class::of(s, h))
        .collect();
    let count = |c: Class| classes.iter().filter(|&&x| x == c).count();
    let both_refuse_same_status = classes
        .iter()
        .zip(sw_run.judged.iter().zip(&ha_run.judged))
        .filter(|(&c, (s, h))| c == Class::BothRefuse && s.verdict == h.verdict)
        .count();
    let desync_cases = |r: &ProxyRun| r.judged.iter().filter(|j| !j.desyncs.is_empty()).count();
    let strict_cases = |r: &ProxyRun| {
        r.judged
            .iter()
            .filter(|j| !j.strict_rejects.is_empty())
            .count()
    };
    let mut verdicts: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    // One row per kind of verdict (not per byte count).
    let row = |v: &Verdict| match v {
        Verdict::Waiting(n) if *n > 0 => "waits for the rest, part forwarded".to_string(),
        other => other.label(),
    };
    for j in &sw_run.judged {
        verdicts.entry(row(&j.verdict)).or_default().0 += 1;
    }
    for j in &ha_run.judged {
        verdicts.entry(row(&j.verdict)).or_default().1 += 1;
    }

    let mut report = String::new();
    let r = &mut report;
    let _ = writeln!(
        r,
        "command: cargo bench --bench smuggling_diff -- --run{}",
        {
            let mut a = String::new();
            if let Some(o) = &opts.only {
                a.push_str(&format!(" --only {o}"));
            }
            if opts.serial {
                a.push_str(" --serial");
            }
            a
        }
    );
    let _ = writeln!(r, "haproxy: {haproxy_version} (config below)");
    let _ = writeln!(
        r,
        "cases: {} of {} ({} hand-written, {} generated in the corpus)",
        cases.len(),
        all.len(),
        hand,
        all.len() - hand
    );
    let _ = writeln!(
        r,
        "run time: {:.1} s ({}; Swiftiply {:.1} s, HAProxy {:.1} s)",
        elapsed.as_secs_f64(),
        if opts.serial {
            "one proxy after the other"
        } else {
            "both proxies at once"
        },
        sw_run.took.as_secs_f64(),
        ha_run.took.as_secs_f64()
    );
    for (name, alive) in [("swiftiply", &sw_alive), ("haproxy", &ha_alive)] {
        if let Err(e) = alive {
            let _ = writeln!(r, "WARNING: {name} died during the run: {e}");
        }
    }
    let _ = writeln!(r);
    let _ = writeln!(r, "{:<46} {:>6}", "", "cases");
    let rows = [
        (
            format!("both refuse (same status: {both_refuse_same_status})"),
            count(Class::BothRefuse),
        ),
        (
            "both wait for the rest of the request".to_string(),
            count(Class::BothWait),
        ),
        (
            "one waits for the rest, the other does not".to_string(),
            count(Class::OneWaits),
        ),
        (
            "both forward, their backends frame it the same".to_string(),
            count(Class::BothForwardSame),
        ),
        (
            "both forward, framed differently".to_string(),
            count(Class::BothForwardDifferent),
        ),
        (
            "Swiftiply refuses, HAProxy forwards".to_string(),
            count(Class::SwiftiplyRefusesHaproxyForwards),
        ),
        (
            "Swiftiply forwards, HAProxy refuses".to_string(),
            count(Class::SwiftiplyForwardsHaproxyRefuses),
        ),
        ("skipped".to_string(), count(Class::Skipped)),
    ];
    for (label, n) in rows {
        let _ = writeln!(r, "{label:<46} {n:>6}");
    }
    let _ = writeln!(r);
    let _ = writeln!(r, "{:<46} {:>9} {:>9}", "", "Swiftiply", "HAProxy");
    for (label, (s, h)) in &verdicts {
        let _ = writeln!(r, "{label:<46} {s:>9} {h:>9}");
    }
    let _ = writeln!(
        r,
        "{:<46} {:>9} {:>9}",
        "cases with a desync at the backend",
        desync_cases(&sw_run),
        desync_cases(&ha_run)
    );
    let _ = writeln!(
        r,
        "{:<46} {:>9} {:>9}",
        "cases forwarding what a strict parser rejects",
        strict_cases(&sw_run),
        strict_cases(&ha_run)
    );

    let section = |r: &mut String, title: &str, pick: &dyn Fn(usize) -> Option<String>| {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, case) in cases.iter().enumerate() {
            if let Some(line) = pick(i) {
                groups
                    .entry(group_of(case))
                    .or_default()
                    .push(format!("{}: {line}", case.name));
            }
        }
        let n: usize = groups.values().map(Vec::len).sum();
        let _ = writeln!(r, "\n== {title} ({n})");
        for (g, lines) in groups {
            let _ = writeln!(r, "  [{g}] ({})", lines.len());
            for l in lines {
                let _ = writeln!(r, "    {l}");
            }
        }
    };
    for class in [
        Class::SwiftiplyForwardsHaproxyRefuses,
        Class::SwiftiplyRefusesHaproxyForwards,
        Class::BothForwardDifferent,
        Class::OneWaits,
        Class::Skipped,
    ] {
        let title = match class {
            Class::SwiftiplyForwardsHaproxyRefuses => "Swiftiply forwards, HAProxy refuses",
            Class::SwiftiplyRefusesHaproxyForwards => "Swiftiply refuses, HAProxy forwards",
            Class::BothForwardDifferent => "both forward, framed differently",
            Class::OneWaits => "one waits for the rest, the other does not",
            _ => "skipped",
        };
        section(r, title, &|i| {
            (classes[i] == class).then(|| {
                let (s, h) = (&sw_run.judged[i], &ha_run.judged[i]);
                let mut line = reason(class, s, h);
                if cases[i].expect.is_some() {
                    line.push_str(&format!(
                        " (corpus expects {})",
                        expect_label(cases[i].expect)
                    ));
                }
                line
            })
        });
    }
    for (name, run) in [("Swiftiply", &sw_run), ("HAProxy", &ha_run)] {
        section(r, &format!("desyncs behind {name}"), &|i| {
            let j = &run.judged[i];
            (!j.desyncs.is_empty()).then(|| j.desyncs.join("; "))
        });
    }
    for (name, run) in [("Swiftiply", &sw_run), ("HAProxy", &ha_run)] {
        section(
            r,
            &format!("{name} forwards what a strict parser rejects"),
            &|i| {
                let j = &run.judged[i];
                (!j.strict_rejects.is_empty()).then(|| j.strict_rejects.join("; "))
            },
        );
    }
    let _ = writeln!(r, "\nfull per-case results: {}", out_path.display());
    print!("{report}");

    // The per-case file.
    let mut full = String::new();
    let f = &mut full;
    let _ = writeln!(f, "{report}");
    let _ = writeln!(f, "== HAProxy configuration\n{ha_config}");
    let _ = writeln!(f, "== Swiftiply configuration\n{}", swiftiply_config());
    let _ = writeln!(f, "== per case");
    for (i, case) in cases.iter().enumerate() {
        let _ = writeln!(
            f,
            "\n=== {} [{}] -> {:?}",
            case.name, case.source, classes[i]
        );
        let _ = writeln!(f, "bytes: {}", show(&case.bytes, 2000));
        let _ = writeln!(f, "corpus expects: {}", expect_label(case.expect));
        for (name, run) in [("swiftiply", &sw_run), ("haproxy", &ha_run)] {
            let j = &run.judged[i];
            let cs = &run.sides[i];
            let _ = writeln!(
                f,
                "{name}: {} ({} ms)",
                j.verdict.label(),
                cs.exchange.took.as_millis()
            );
            let _ = writeln!(f, "  client got: {}", j.responses);
            let _ = writeln!(f, "  raw: {}", show(&cs.exchange.received, 600));
            for d in &run.details[i] {
                let _ = writeln!(f, "  backend: {d}");
            }
            for d in &j.desyncs {
                let _ = writeln!(f, "  DESYNC: {d}");
            }
            for d in &j.strict_rejects {
                let _ = writeln!(f, "  STRICT: {d}");
            }
        }
    }
    if let Some(parent) = out_path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&out_path, full)
        .map_err(|e| format!("cannot write {}: {e}", out_path.display()))?;
    Ok(())
}
