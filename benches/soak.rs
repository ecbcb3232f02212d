//! Soak: the proxy under steady load for a long time, with its backends
//! killed and restarted all along: `cargo bench --bench soak -- --minutes 10`.
//!
//! What it does:
//! 1. builds the release proxy and the example app (or takes
//!    `SWIFTIPLY_BIN` and `APP_BIN`), starts the proxy with one
//!    redeployable section and `BACKENDS` app processes, each holding
//!    `CONNECTIONS` backend connections;
//! 2. measures the highest request rate the set-up sustains, closed loop
//!    with `CLIENTS` keep-alive clients, for `--calibrate` seconds;
//! 3. runs open loop at `--fraction` (0.7) of that rate for `--minutes`,
//!    the requests spread evenly over the clients, while every `--churn`
//!    seconds one app process chosen at random is killed (SIGKILL, with
//!    requests in flight) and a new one started in its place;
//! 4. every `--sample` seconds (10) prints the proxy's RSS, its open
//!    descriptors, the requests and errors so far and the rate achieved;
//! 5. ends with the first and last samples side by side and whether RSS,
//!    descriptors and errors stayed flat.
//!
//! Every request posts a token the app echoes back, so a response that
//! reached the wrong client counts as an error. Traffic goes to loopback
//! only; every child dies with the harness (`compare/lab.rs`). Without
//! arguments (as `cargo test --all-targets` runs it) it does nothing.

// Shared with the compare harness (building the programs, children that
// die with the harness, the HTTP client); this program uses part of them.
#[allow(dead_code)]
#[path = "compare/http.rs"]
mod http;
#[allow(dead_code)]
#[path = "compare/lab.rs"]
mod lab;
#[allow(dead_code)]
#[path = "compare/peers.rs"]
mod peers;
#[allow(dead_code)]
#[path = "compare/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "compare/setup.rs"]
mod setup;
#[allow(dead_code)]
#[path = "compare/wrk.rs"]
mod wrk;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use lab::{Lab, Place, ProcId};

const USAGE: &str = "\
usage: cargo bench --bench soak -- [--minutes M] [--fraction F] [--churn S]
                                  [--sample S] [--calibrate S]
  --minutes M     how long the steady load runs (default 10)
  --fraction F    share of the calibrated maximum rate to send (default 0.7)
  --churn S       kill and restart one backend process every S seconds (default 5)
  --sample S      seconds between samples (default 10)
  --calibrate S   seconds of closed-loop load to find the maximum (default 10)
SWIFTIPLY_BIN and APP_BIN, when both set, name prebuilt programs.";

const CLIENTS: usize = 16;
const BACKENDS: usize = 4;
const CONNECTIONS: usize = 4;
const TIMEOUT: Duration = Duration::from_secs(10);

struct Options {
    minutes: f64,
    fraction: f64,
    churn: f64,
    sample: f64,
    calibrate: f64,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` adds `--bench`; `cargo test --all-targets` adds nothing.
    let args: Vec<String> = args.into_iter().filter(|a| a != "--bench").collect();
    if std::env::args().len() == 1 {
        return ExitCode::SUCCESS;
    }
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("soak: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    lab::install_signal_handlers();
    match run(&opts) {
        Ok(flat) if flat => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        minutes: 10.0,
        fraction: 0.7,
        churn: 5.0,
        sample: 10.0,
        calibrate: 10.0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<f64, String> {
            let v = it.next().ok_or(format!("{name} needs a value"))?;
            v.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or(format!("{name}: `{v}` is not a positive number"))
        };
        match a.as_str() {
            "--minutes" => o.minutes = value(a)?,
            "--fraction" => o.fraction = value(a)?.min(1.0),
            "--churn" => o.churn = value(a)?,
            "--sample" => o.sample = value(a)?,
            "--calibrate" => o.calibrate = value(a)?,
            "-h" | "--help" => return Err("help".into()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn run(o: &Options) -> Result<bool, String> {
    lab::raise_nofile_limit()?;
    let bins = setup::build()?;
    let (swiftiply, app) = (bins.swiftiply, bins.app);
    let mut lab = Lab::new(None)?;
    let client_port = lab::free_port()?;
    let backend_port = lab::free_port()?;
    let client: SocketAddr = format!("127.0.0.1:{client_port}")
        .parse()
        .unwrap_or_else(|_| unreachable!("a literal address with a port parses"));
    let config = lab.write_file(
        "soak.yml",
        &format!(
            "cluster_address: 127.0.0.1\ncluster_port: {client_port}\ntimeout: 10\n\
             logger:\n  log_level: 1\nmap:\n  - incoming: soak.test\n    \
             outgoing: 127.0.0.1:{backend_port}\n    default: true\n    redeployable: true\n"
        ),
    )?;
    let mut cmd = Command::new(&swiftiply);
    cmd.arg(&config);
    let proxy = lab.spawn("swiftiply", cmd, Place::Proxy)?;
    lab.wait_for_output(proxy, "the proxy's start", lab::after(10.0), |out| {
        out.contains("swiftiply: ready")
    })?;
    let proxy_pid = lab.pid(proxy).ok_or("the proxy has no pid")?;

    let start_app = |lab: &mut Lab, n: usize| -> Result<ProcId, String> {
        let mut cmd = Command::new(&app);
        cmd.args([
            "--swiftiply",
            &format!("127.0.0.1:{backend_port}"),
            "--connections",
            &CONNECTIONS.to_string(),
        ]);
        lab.spawn(&format!("app{n}"), cmd, Place::Load)
    };
    let mut apps = Vec::new();
    for n in 0..BACKENDS {
        apps.push(start_app(&mut lab, n)?);
    }
    // The backends are in once the proxy answers through them.
    let ready = lab::after(10.0);
    while !http::get_once(client, "/hello", TIMEOUT).is_ok_and(|r| r.status == 200) {
        if Instant::now() >= ready {
            return Err("the app's backends did not answer through the proxy within 10 s".into());
        }
        thread::sleep(Duration::from_millis(50));
    }

    println!(
        "== calibrating: {CLIENTS} clients, closed loop, {} s",
        o.calibrate
    );
    let max_rate = calibrate(client, o.calibrate)?;
    let rate = max_rate * o.fraction;
    println!(
        "   maximum {max_rate:.0} requests/s; soak at {:.0}% = {rate:.0} requests/s",
        o.fraction * 100.0
    );

    let load = Load::start(client, rate);
    println!(
        "== soak: {} min, one of {BACKENDS} backend processes killed and restarted every {} s",
        o.minutes, o.churn
    );
    println!(
        "{:>7} {:>10} {:>6} {:>12} {:>8} {:>10} {:>8}",
        "t (s)", "RSS (KiB)", "fds", "requests", "errors", "req/s", "kills"
    );
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(o.minutes * 60.0);
    let mut next_sample = started;
    let mut next_churn = started + Duration::from_secs_f64(o.churn);
    let mut samples: Vec<Sample> = Vec::new();
    let mut kills = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(proxy_pid);
    let mut last = (started, 0u64);
    let mut n_app = BACKENDS;
    loop {
        lab::check_interrupt()?;
        lab.check_alive(proxy)?;
        let now = Instant::now();
        if now >= next_sample || now >= end {
            let requests = load.done.load(Ordering::Relaxed);
            let rate_now =
                (requests - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
            last = (now, requests);
            let s = Sample {
                secs: now.duration_since(started).as_secs(),
                rss_kib: lab::rss_bytes(proxy_pid)? / 1024,
                fds: fd_count(proxy_pid)?,
                requests,
                errors: load.errors.load(Ordering::Relaxed),
            };
            println!(
                "{:>7} {:>10} {:>6} {:>12} {:>8} {:>10.0} {:>8}",
                s.secs, s.rss_kib, s.fds, s.requests, s.errors, rate_now, kills
            );
            samples.push(s);
            next_sample += Duration::from_secs_f64(o.sample);
            if now >= end {
                break;
            }
        }
        if now >= next_churn {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let victim = (seed % apps.len() as u64) as usize;
            let id = apps[victim];
            lab.signal(id, libc::SIGKILL);
            lab.finish(id);
            apps[victim] = start_app(&mut lab, n_app)?;
            n_app += 1;
            kills += 1;
            next_churn += Duration::from_secs_f64(o.churn);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let (requests, errors, wrong) = load.stop();
    Ok(report(&samples, requests, errors, wrong))
}

struct Sample {
    secs: u64,
    rss_kib: u64,
    fds: usize,
    requests: u64,
    errors: u64,
}

/// The soak's verdict: RSS and descriptors flat, no error.
fn report(samples: &[Sample], requests: u64, errors: u64, wrong: u64) -> bool {
    // The baseline is the first sample after a minute of load (a third of
    // a shorter run): pools and buffers have grown to their working size
    // by then, and every client is connected.
    let total = samples.last().map_or(0, |s| s.secs);
    let settled = 60.min(total / 3).max(1);
    let base = samples.iter().find(|s| s.secs >= settled);
    let (Some(base), Some(last)) = (base, samples.last()) else {
        println!("no samples");
        return false;
    };
    let rss_growth = last.rss_kib as f64 / base.rss_kib.max(1) as f64;
    let rss_flat = last.rss_kib <= base.rss_kib + base.rss_kib / 10 + 1024;
    let fds_flat = last.fds.abs_diff(base.fds) <= 2 * CONNECTIONS;
    println!("\n== result: {requests} requests, {errors} errors, {wrong} responses with another request's token");
    println!(
        "   RSS {} KiB at {} s, {} KiB at {} s ({rss_growth:.3}x): {}",
        base.rss_kib,
        base.secs,
        last.rss_kib,
        last.secs,
        if rss_flat { "flat" } else { "GROWING" }
    );
    println!(
        "   descriptors {} at {} s, {} at {} s: {}",
        base.fds,
        base.secs,
        last.fds,
        last.secs,
        if fds_flat { "flat" } else { "CHANGED" }
    );
    rss_flat && fds_flat && errors == 0 && wrong == 0
}

fn fd_count(pid: u32) -> Result<usize, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .map_err(|e| format!("cannot list /proc/{pid}/fd: {e}"))
}

/// Closed-loop requests/s with `CLIENTS` keep-alive clients.
fn calibrate(addr: SocketAddr, secs: f64) -> Result<f64, String> {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            thread::spawn(move || -> Result<u64, String> {
                let mut c = http::Client::connect(addr, TIMEOUT).map_err(|e| e.to_string())?;
                let mut n = 0;
                while Instant::now() < until {
                    let r = c.get("/hello").map_err(|e| e.to_string())?;
                    if r.status != 200 {
                        return Err(format!("status {}", r.status));
                    }
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| "a calibration client panicked".to_string())??;
    }
    Ok(total as f64 / secs)
}

/// The open-loop load: `CLIENTS` threads, each sending its share of the
/// rate on one keep-alive connection (reconnecting after an error), every
/// request with its own token.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    wrong: Arc<AtomicU64>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, rate: f64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let wrong = Arc::new(AtomicU64::new(0));
        let every = Duration::from_secs_f64(CLIENTS as f64 / rate.max(1.0));
        let threads = (0..CLIENTS)
            .map(|t| {
                let (stop, done, errors, wrong) =
                    (stop.clone(), done.clone(), errors.clone(), wrong.clone());
                thread::spawn(move || {
                    let mut conn: Option<TcpStream> = None;
                    let mut next = Instant::now();
                    let mut i = 0u64;
                    let mut buf = vec![0u8; 64 * 1024];
                    while !stop.load(Ordering::Relaxed) {
                        let now = Instant::now();
                        if now < next {
                            thread::sleep(next - now);
                        }
                        // Behind schedule: go on at once, but never owe
                        // more than a second's worth of requests.
                        next = next.max(Instant::now() - Duration::from_secs(1)) + every;
                        let token = format!("t{t}n{i}");
                        i += 1;
                        match request(&mut conn, addr, &token, &mut buf) {
                            Ok(true) => {
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(false) => {
                                wrong.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                            }
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                conn = None;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            done,
            errors,
            wrong,
            threads,
        }
    }

    /// Stops the clients; (requests, errors, wrong responses).
    fn stop(self) -> (u64, u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        (
            self.done.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
            self.wrong.load(Ordering::Relaxed),
        )
    }
}

/// One `POST /echo` of TOKEN on `conn` (connecting first if needed): Ok(true)
/// when the answer is a 200 whose body holds the token, Ok(false) when it
/// holds another, Err on any failure.
fn request(
    conn: &mut Option<TcpStream>,
    addr: SocketAddr,
    token: &str,
    buf: &mut [u8],
) -> std::io::Result<bool> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        s.set_nodelay(true)?;
        *conn = Some(s);
    }
    let Some(s) = conn.as_mut() else {
        unreachable!("connected just above")
    };
    write!(
        s,
        "POST /echo HTTP/1.1\r\nHost: soak.test\r\nContent-Length: {}\r\n\r\n{token}",
        token.len()
    )?;
    // The response: a head with Content-Length, then the body.
    let mut have = 0;
    let (head_end, len) = loop {
        let n = s.read(&mut buf[have..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        if let Some(i) = buf[..have].windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(std::io::Error::other(format!(
                    "status line {:?}",
                    head.lines().next()
                )));
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| std::io::Error::other("no Content-Length"))?;
            break (i + 4, len);
        }
        if have == buf.len() {
            return Err(std::io::Error::other("response head too large"));
        }
    };
    while have < head_end + len {
        if have == buf.len() {
            return Err(std::io::Error::other("response too large"));
        }
        let n = s.read(&mut buf[have..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
    }
    let body = &buf[head_end..head_end + len];
    Ok(body.windows(token.len()).any(|w| w == token.as_bytes()))
}
