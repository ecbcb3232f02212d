//! The programs under test and how each is configured and started: the
//! example application (plain HTTP, or dialing in to Swiftiply), Swiftiply,
//! HAProxy and nginx, each optionally under callgrind.
//!
//! The peers are configured the way an operator would run them in front of
//! an application with 8 workers: HAProxy with one thread, `http-reuse
//! always` and `maxconn 8` on the server (so it queues the rest, as
//! Swiftiply does with 8 backend connections); nginx with one worker and an
//! upstream keep-alive pool. Open-source nginx cannot queue for a busy
//! upstream (`max_conns=8` answers 502 once 8 are busy), so it runs with
//! `keepalive 64` and no cap: it holds one upstream connection per active
//! client. No logging anywhere (nginx: errors only, to a file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::http;
use crate::lab::{self, Lab, Place, ProcId};

/// Seconds a request may wait for a free backend connection, for Swiftiply
/// (`timeout`) and HAProxy (`timeout queue`) alike.
pub const QUEUE_TIMEOUT_S: u32 = 10;
/// Backend connections Swiftiply gets and HAProxy may use.
pub const BACKEND_CONNS: usize = 8;
/// nginx's upstream keep-alive pool.
pub const NGINX_KEEPALIVE: usize = 64;

/// The release binaries built for the run.
pub struct Bins {
    pub swiftiply: PathBuf,
    pub app: PathBuf,
}

/// Runs a program under callgrind, writing its profile to `out`.
pub struct Callgrind<'a> {
    pub valgrind: &'a Path,
    pub out: PathBuf,
}

fn command(program: &Path, callgrind: Option<&Callgrind>) -> Command {
    match callgrind {
        None => Command::new(program),
        Some(cg) => {
            let mut cmd = Command::new(cg.valgrind);
            cmd.arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", cg.out.display()))
                .arg(program);
            cmd
        }
    }
}

/// Waits until `GET path` at `addr` answers 200, while `id` runs.
pub fn wait_until_serving(
    lab: &Lab,
    id: ProcId,
    addr: SocketAddr,
    path: &str,
    until: Instant,
) -> Result<(), String> {
    loop {
        lab::check_interrupt()?;
        lab.check_alive(id)?;
        let last = match http::get_once(addr, path, Duration::from_secs(2)) {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => format!("status {}", r.status),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= until {
            return Err(format!(
                "{addr}{path} did not answer 200 in time (last: {last}); output:\n{}",
                lab.output_tail(id, 15)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `app --listen 127.0.0.1:0`, the backend for direct, HAProxy and nginx.
pub fn start_app_http(lab: &mut Lab, bins: &Bins) -> Result<(ProcId, SocketAddr), String> {
    let mut cmd = Command::new(&bins.app);
    cmd.args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error");
    let id = lab.spawn("app-http", cmd, Place::Load)?;
    const LINE: &str = "app: serving plain HTTP on ";
    let out = lab.wait_for_output(id, "the app's listening line", lab::after(10.0), |t| {
        t.lines().any(|l| l.starts_with(LINE))
    })?;
    let addr = out
        .lines()
        .find_map(|l| l.strip_prefix(LINE))
        .and_then(|a| a.trim().parse().ok())
        .ok_or_else(|| format!("cannot read the app's address from:\n{out}"))?;
    wait_until_serving(lab, id, addr, "/hello", lab::after(10.0))?;
    Ok((id, addr))
}

/// `app --swiftiply ADDR --connections N`: the backend dialing in.
pub fn start_app_backend(
    lab: &mut Lab,
    bins: &Bins,
    proxy_backend: SocketAddr,
) -> Result<ProcId, String> {
    let mut cmd = Command::new(&bins.app);
    cmd.arg("--swiftiply")
        .arg(proxy_backend.to_string())
        .arg("--connections")
        .arg(BACKEND_CONNS.to_string())
        .env("RUST_LOG", "error");
    lab.spawn("app-backend", cmd, Place::Load)
}

pub fn swiftiply_config() -> String {
    format!(
        "cluster_address: 127.0.0.1
cluster_port: 0
timeout: {QUEUE_TIMEOUT_S}
keepalive_timeout: 300
logger: {{log_level: 0}}
map:
  - incoming: bench.test
    outgoing: 127.0.0.1:0
    default: true
"
    )
}

pub struct Swiftiply {
    pub proc: ProcId,
    pub backend_app: ProcId,
    pub clients: SocketAddr,
}

/// Starts Swiftiply (pinned to the proxy CPU) and an app dialing in with
/// `BACKEND_CONNS` connections; returns once a request goes through.
pub fn start_swiftiply(
    lab: &mut Lab,
    bins: &Bins,
    callgrind: Option<&Callgrind>,
) -> Result<Swiftiply, String> {
    let config = lab.write_file("swiftiply.yml", &swiftiply_config())?;
    let mut cmd = command(&bins.swiftiply, callgrind);
    cmd.arg(&config);
    let proc = lab.spawn("swiftiply", cmd, Place::Proxy)?;
    // Under valgrind start-up takes seconds.
    let patience = if callgrind.is_some() { 120.0 } else { 10.0 };
    let out = lab.wait_for_output(proc, "\"swiftiply: ready\"", lab::after(patience), |t| {
        t.lines().any(|l| l.trim() == "swiftiply: ready")
    })?;
    let find = |prefix: &str| -> Result<SocketAddr, String> {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|a| a.trim().parse().ok())
            .ok_or_else(|| format!("no {prefix:?} line in swiftiply's output:\n{out}"))
    };
    let clients = find("swiftiply: clients listening on ")?;
    let backends = find("swiftiply: section 0 backends listening on ")?;
    let backend_app = start_app_backend(lab, bins, backends)?;
    wait_until_serving(lab, proc, clients, "/hello", lab::after(patience))?;
    lab.check_alive(backend_app)?;
    Ok(Swiftiply {
        proc,
        backend_app,
        clients,
    })
}

pub struct Haproxy {
    pub proc: ProcId,
    /// The plain frontend.
    pub plain: SocketAddr,
    /// The frontend whose backend has `option splice-response`, if asked for.
    pub splice: Option<SocketAddr>,
    /// The `maxconn` it runs with (lowered to fit the descriptor limit).
    pub maxconn: usize,
    pub config: String,
}

/// What a HAProxy instance is for.
#[derive(Clone, Copy)]
pub struct HaproxyPlan {
    /// `maxconn` in global and defaults; lowered when it does not fit.
    pub maxconn: usize,
    /// `ulimit-n`; `None` lets HAProxy derive it from `maxconn` (under
    /// valgrind, which keeps a few descriptors for itself).
    pub nofile: Option<u64>,
    /// Add the second frontend, whose backend splices responses. Splicing
    /// reserves pipes (maxconn / 4 by default, two descriptors each), so
    /// the idle-connection instance leaves it out to fit more connections.
    pub splice: bool,
}

pub fn haproxy_config(
    plain: SocketAddr,
    splice: Option<SocketAddr>,
    app: SocketAddr,
    maxconn: usize,
    nofile: Option<u64>,
) -> String {
    let ulimit = nofile.map_or(String::new(), |n| format!("    ulimit-n {n}\n"));
    let mut text = format!(
        "global
    nbthread 1
    maxconn {maxconn}
{ulimit}
defaults
    mode http
    maxconn {maxconn}
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout queue {QUEUE_TIMEOUT_S}s
    timeout http-request 10s
    timeout http-keep-alive 300s

frontend plain
    bind {plain}
    default_backend app

backend app
    server app {app} maxconn {BACKEND_CONNS}
"
    );
    if let Some(splice) = splice {
        text.push_str(&format!(
            "
frontend splice
    bind {splice}
    default_backend app_splice

backend app_splice
    option splice-response
    server app {app} maxconn {BACKEND_CONNS}
"
        ));
    }
    text
}

/// Starts HAProxy in the foreground (`-db`, one process) on the proxy CPU.
/// It refuses to start when its descriptor need (2 per connection, plus
/// pipes for splicing, plus a few) exceeds the limit; then `maxconn` is
/// scaled down to what fits and it is started again.
pub fn start_haproxy(
    lab: &mut Lab,
    haproxy: &Path,
    app: SocketAddr,
    plan: HaproxyPlan,
    callgrind: Option<&Callgrind>,
) -> Result<Haproxy, String> {
    let mut maxconn = plan.maxconn;
    for _ in 0..4 {
        let plain: SocketAddr = ([127, 0, 0, 1], lab::free_port()?).into();
        let splice = if plan.splice {
            Some(([127, 0, 0, 1], lab::free_port()?).into())
        } else {
            None
        };
        let config = haproxy_config(plain, splice, app, maxconn, plan.nofile);
        let path = lab.write_file("haproxy.cfg", &config)?;
        let mut cmd = command(haproxy, callgrind);
        cmd.arg("-db").arg("-f").arg(&path);
        let proc = lab.spawn("haproxy", cmd, Place::Proxy)?;
        let patience = if callgrind.is_some() { 120.0 } else { 10.0 };
        let started = wait_until_serving(lab, proc, plain, "/hello", lab::after(patience))
            .and_then(|()| match splice {
                Some(a) => wait_until_serving(lab, proc, a, "/hello", lab::after(patience)),
                None => Ok(()),
            });
        let e = match started {
            Ok(()) => {
                return Ok(Haproxy {
                    proc,
                    plain,
                    splice,
                    maxconn,
                    config,
                })
            }
            Err(e) => e,
        };
        let out = lab.output(proc);
        lab.finish(proc);
        // "[ALERT] ... FD limit (20000) too low for maxconn=10010/
        // maxsock=20034. Please raise 'ulimit-n' to 20034 or more"
        let needed = out
            .split("Please raise 'ulimit-n' to ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<u64>().ok());
        let (Some(needed), Some(limit)) = (needed, plan.nofile) else {
            return Err(format!("haproxy did not start: {e}"));
        };
        let fits = (maxconn as u64 * limit / needed.max(1)).saturating_sub(1) as usize;
        println!(
            "haproxy: maxconn {maxconn} needs {needed} descriptors, the limit is {limit}; \
             trying maxconn {fits}"
        );
        maxconn = fits;
    }
    Err("haproxy did not start with any maxconn tried".into())
}

pub struct Nginx {
    /// The master (with `master_process off`: the only process).
    pub proc: ProcId,
    /// The process that serves: the worker, or the master when it is alone.
    pub serving_pid: u32,
    pub addr: SocketAddr,
    pub config: String,
    pub error_log: PathBuf,
}

pub fn nginx_config(
    dir: &Path,
    addr: SocketAddr,
    app: SocketAddr,
    worker_connections: usize,
    nofile: Option<u64>,
    single_process: bool,
) -> String {
    let d = dir.display();
    let rlimit = nofile.map_or(String::new(), |n| format!("worker_rlimit_nofile {n};\n"));
    let master = if single_process { "off" } else { "on" };
    format!(
        "worker_processes 1;
daemon off;
master_process {master};
pid {d}/nginx.pid;
error_log {d}/nginx-error.log error;
{rlimit}
events {{
    worker_connections {worker_connections};
}}

http {{
    access_log off;
    keepalive_timeout 300s;
    keepalive_requests 1000000000;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;

    upstream app {{
        server {app};
        keepalive {NGINX_KEEPALIVE};
        keepalive_requests 1000000000;
        keepalive_timeout 300s;
    }}

    server {{
        listen {addr} backlog=4096;
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_buffers 16 64k;
            proxy_busy_buffers_size 128k;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"
    )
}

/// Starts nginx with one worker (or, for callgrind, as one process) on the
/// proxy CPU.
pub fn start_nginx(
    lab: &mut Lab,
    nginx: &Path,
    app: SocketAddr,
    worker_connections: usize,
    nofile: Option<u64>,
    callgrind: Option<&Callgrind>,
) -> Result<Nginx, String> {
    let prefix = lab.dir.join(format!("nginx-{}", lab::free_port()?));
    std::fs::create_dir_all(&prefix)
        .map_err(|e| format!("cannot create {}: {e}", prefix.display()))?;
    // A worker started by root runs as nobody: let it in.
    for dir in [&lab.dir, &prefix] {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
    let addr: SocketAddr = ([127, 0, 0, 1], lab::free_port()?).into();
    let single = callgrind.is_some();
    let config = nginx_config(&prefix, addr, app, worker_connections, nofile, single);
    let path = prefix.join("nginx.conf");
    std::fs::write(&path, &config).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut cmd = command(nginx, callgrind);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-e")
        .arg(prefix.join("nginx-error.log"))
        .arg("-c")
        .arg(&path);
    let proc = lab.spawn("nginx", cmd, Place::Proxy)?;
    let patience = if single { 120.0 } else { 10.0 };
    let started = wait_until_serving(lab, proc, addr, "/hello", lab::after(patience));
    let error_log = prefix.join("nginx-error.log");
    if let Err(e) = started {
        let log = std::fs::read_to_string(&error_log).unwrap_or_default();
        return Err(format!("nginx did not start: {e}\nerror log:\n{log}"));
    }
    let master = lab.pid(proc).ok_or("nginx exited")?;
    let serving_pid = if single {
        master
    } else {
        lab::child_of(master).ok_or("cannot find nginx's worker process")?
    };
    Ok(Nginx {
        proc,
        serving_pid,
        addr,
        config,
        error_log,
    })
}
