//! Swiftiply against HAProxy, nginx and the backend served directly, on the
//! same backend program, in one run: `cargo bench --bench compare`.
//!
//! Why by hand: the figures that matter for a proxy (requests/s and tail
//! latency through it, GB/s for large bodies, memory per idle connection,
//! behaviour with many more clients than backend connections, and the cost
//! of one request in instructions and allocations) need real sockets, real
//! peers and a load generator, so this is a program rather than a
//! `#[bench]`. It installs nothing; it needs `wrk` (Debian: `wrk`) and uses
//! `haproxy`, `nginx` (`nginx-light`) and `valgrind` when they are there,
//! saying so when one is skipped.
//!
//! How: it builds the release binaries (`cargo build --release --bin
//! swiftiply --example app`), starts every target once, and measures in
//! alternating rounds (direct, swiftiply, haproxy, nginx, direct, …) so a
//! drift of the machine hits every target alike; each measurement is
//! preceded by a 1 s warm-up of that target. The proxy under test runs on
//! one CPU, wrk and the backend on another. Idle-connection memory uses a
//! fresh proxy process per measurement (a process that already held many
//! connections keeps their memory). The cost per request is measured once,
//! after the rounds: allocations by running Swiftiply's reactor in this
//! process under a counting allocator (`compare/allocs.rs`), instructions
//! with callgrind (`compare/callgrind.rs`). The end is one table: median and
//! min–max over rounds for each target, and Swiftiply ÷ each peer.
//!
//! Every child runs under a guard that kills it when the harness ends, on
//! error or Ctrl-C too, and every wait has a deadline (`compare/lab.rs`).
//! Started without any argument (as `cargo test --all-targets` does), it
//! only checks its wrk output parser.

#[path = "compare/allocs.rs"]
mod allocs;
#[path = "compare/callgrind.rs"]
mod callgrind;
#[path = "compare/http.rs"]
mod http;
#[path = "compare/idle.rs"]
mod idle;
#[path = "compare/lab.rs"]
mod lab;
#[path = "compare/peers.rs"]
mod peers;
#[path = "compare/report.rs"]
mod report;
#[path = "compare/setup.rs"]
mod setup;
#[path = "compare/wrk.rs"]
mod wrk;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lab::{Lab, ProcId};
use peers::Bins;
use report::{Results, Scenario, Target};
use setup::{Options, Tools, USAGE};

#[global_allocator]
static ALLOCATOR: allocs::CountingAlloc = allocs::CountingAlloc;

/// Connections for small responses and for 1 MiB responses.
const SMALL_CONNS: usize = 50;
const LARGE_CONNS: usize = 10;
/// Connections for the queue-pressure run, and wrk's timeout there.
const QUEUE_CONNS: usize = 2000;
const QUEUE_WRK_TIMEOUT_S: u32 = 10;
const LARGE_BODY: usize = 1 << 20;
const HELLO_BODY: usize = 13;

fn main() -> ExitCode {
    let opts = match Options::parse(std::env::args().skip(1).collect()) {
        Ok(Some(o)) => o,
        Ok(None) => return ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    lab::install_signal_handlers();
    match run(&opts) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("compare: finished, but some results have errors (marked ! in the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything a round needs.
struct Bench<'a> {
    opts: &'a Options,
    tools: &'a Tools,
    bins: Bins,
    lab: Lab,
    results: Results,
    nofile: u64,
    /// The backend served directly (plain HTTP), shared by HAProxy and nginx.
    app: (ProcId, SocketAddr),
    /// Targets started once for the wrk scenarios.
    /// Each target: its process, the process whose CPU time it spends
    /// (nginx's worker; none for the backend alone) and its address.
    fleet: Vec<(Target, ProcId, Option<u32>, SocketAddr)>,
    /// Configurations already printed.
    shown: Vec<&'static str>,
    /// The running nginx's error log, shown when wrk reports errors.
    nginx_error_log: Option<PathBuf>,
    /// The HAProxy maxconn that fits the descriptor limit, once found.
    idle_haproxy_maxconn: Option<usize>,
    /// Listen-queue overflows (TcpExt ListenOverflows) during measurements.
    overflows: BTreeMap<(Scenario, Target), u64>,
}

fn run(opts: &Options) -> Result<bool, String> {
    wrk::self_test()?;
    let nofile = lab::raise_nofile_limit()?;
    let tools = Tools::find();
    let uses_wrk = [Scenario::Small, Scenario::Large, Scenario::Queue]
        .iter()
        .any(|s| opts.wants(*s));
    if uses_wrk && tools.wrk.is_none() {
        return Err(
            "wrk is required for the small, large and queue scenarios and was not \
                    found (Debian: apt-get install wrk); install it, or pick other \
                    scenarios with --only idle,cost"
                .into(),
        );
    }
    let cpus = lab::choose_cpus(opts.load_cpus);
    setup::print_header(opts, &tools, nofile, cpus.as_ref());
    let bins = setup::build()?;
    if let Some(c) = &cpus {
        // wrk, the backends and the client threads of this harness run here.
        lab::pin_current_thread(&c.load)?;
    }
    let mut lab = Lab::new(cpus)?;
    let app = peers::start_app_http(&mut lab, &bins)?;
    let mut bench = Bench {
        opts,
        tools: &tools,
        bins,
        lab,
        results: Results::default(),
        nofile,
        app,
        fleet: Vec::new(),
        shown: Vec::new(),
        nginx_error_log: None,
        idle_haproxy_maxconn: None,
        overflows: BTreeMap::new(),
    };
    bench.titles();
    if uses_wrk {
        bench.start_fleet()?;
    }
    for round in 1..=opts.rounds {
        bench.round(round)?;
    }
    if opts.wants(Scenario::Cost) {
        bench.cost()?;
    }
    bench.derived_notes();
    println!(
        "\n== results: {} round(s) of {} s per measurement; n = samples",
        opts.rounds, opts.secs
    );
    print!("{}", bench.results.table());
    Ok(!bench.results.has_problems())
}

impl Bench<'_> {
    fn titles(&mut self) {
        let r = &mut self.results;
        r.title(
            Scenario::Small,
            format!(
                "GET /hello ({HELLO_BODY}-byte body), {SMALL_CONNS} keep-alive connections, \
                 wrk -t1 --latency"
            ),
        );
        r.title(
            Scenario::Large,
            format!("GET /large (1 MiB body), {LARGE_CONNS} keep-alive connections, wrk -t1"),
        );
        r.title(
            Scenario::Idle,
            format!(
                "RSS with up to {} used, idle keep-alive connections minus RSS at rest, \
                 per connection (fresh process each time)",
                self.opts.idle_conns
            ),
        );
        r.title(
            Scenario::Queue,
            format!(
                "GET /hello, {QUEUE_CONNS} keep-alive connections onto {} backend \
                 connections, wrk -t1 --timeout {QUEUE_WRK_TIMEOUT_S}s",
                peers::BACKEND_CONNS
            ),
        );
        r.title(
            Scenario::Cost,
            format!(
                "steady state; allocations: in-process reactor, {} requests after {} \
                 warm-up; instructions: callgrind, (I2 - I1) / (N2 - N1) with N1 = {}, N2 = {}",
                allocs::MEASURED,
                allocs::WARMUP,
                callgrind::N1,
                callgrind::N2
            ),
        );
    }

    /// Prints a configuration the first time it is used.
    fn show_config(&mut self, name: &'static str, text: &str) {
        if !self.shown.contains(&name) {
            self.shown.push(name);
            println!("\n== {name} configuration (addresses and limits of the first instance)");
            print!("{text}");
        }
    }

    /// The targets of the wrk scenarios, each started once for the run;
    /// each answers /hello and /large correctly before anything is measured.
    fn start_fleet(&mut self) -> Result<(), String> {
        println!("\n== starting the targets");
        let app_addr = self.app.1;
        self.fleet
            .push((Target::Direct, self.app.0, None, app_addr));
        let s = peers::start_swiftiply(&mut self.lab, &self.bins, None)?;
        self.show_config("swiftiply", &peers::swiftiply_config());
        let pid = self.lab.pid(s.proc);
        self.fleet.push((Target::Swiftiply, s.proc, pid, s.clients));
        if let Some(hap) = self.tools.haproxy.clone() {
            // Far above the client count: with maxconn barely above
            // 2,000 clients, HAProxy 2.6 fell to a tenth of its rate.
            let plan = peers::HaproxyPlan {
                maxconn: 4 * QUEUE_CONNS,
                nofile: Some(self.nofile),
                splice: true,
            };
            match peers::start_haproxy(&mut self.lab, &hap, app_addr, plan, None) {
                Ok(h) => {
                    self.show_config("haproxy", &h.config);
                    let pid = self.lab.pid(h.proc);
                    self.fleet.push((Target::Haproxy, h.proc, pid, h.plain));
                    if let Some(splice) = h.splice {
                        self.fleet
                            .push((Target::HaproxySplice, h.proc, pid, splice));
                    }
                }
                Err(e) => println!("SKIPPED: haproxy ({e})"),
            }
        }
        if let Some(ngx) = self.tools.nginx.clone() {
            // As many as the descriptor limit allows: with 2,000 clients
            // nginx also holds up to 2,000 upstream connections.
            let wc = self.nginx_worker_connections(usize::MAX);
            match peers::start_nginx(&mut self.lab, &ngx, app_addr, wc, Some(self.nofile), None) {
                Ok(n) => {
                    self.show_config("nginx", &n.config);
                    self.nginx_error_log = Some(n.error_log.clone());
                    println!(
                        "nginx: open-source nginx cannot queue requests for a busy upstream \
                         (max_conns=8 answers 502 once 8 are busy), so it runs with keepalive \
                         {} and no cap: it holds one upstream connection per active client",
                        peers::NGINX_KEEPALIVE
                    );
                    self.fleet
                        .push((Target::Nginx, n.proc, Some(n.serving_pid), n.addr));
                }
                Err(e) => println!("SKIPPED: nginx ({e})"),
            }
        }
        for &(target, _, _, addr) in &self.fleet {
            for (path, len) in [("/hello", HELLO_BODY), ("/large", LARGE_BODY)] {
                let r = http::get_once(addr, path, Duration::from_secs(10))
                    .map_err(|e| format!("{}: GET {path}: {e}", target.name()))?;
                if r.status != 200 || r.body_len != len {
                    return Err(format!(
                        "{}: GET {path} answered {} with {} bytes, expected 200 with {len}",
                        target.name(),
                        r.status,
                        r.body_len
                    ));
                }
            }
        }
        let names: Vec<&str> = self.fleet.iter().map(|f| f.0.name()).collect();
        println!("targets ready: {}", names.join(", "));
        Ok(())
    }

    fn nginx_worker_connections(&self, want: usize) -> usize {
        want.max(1024).min(self.nofile.saturating_sub(64) as usize)
    }

    fn round(&mut self, round: usize) -> Result<(), String> {
        let of = self.opts.rounds;
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("\n== round {round}/{of} (load average {})", load.join(" "));
        let secs = self.opts.secs;
        let plan = [
            (Scenario::Small, "/hello", SMALL_CONNS, None),
            (Scenario::Large, "/large", LARGE_CONNS, None),
            (
                Scenario::Queue,
                "/hello",
                QUEUE_CONNS,
                Some(QUEUE_WRK_TIMEOUT_S),
            ),
        ];
        for (scenario, path, connections, timeout_s) in plan {
            if !self.opts.wants(scenario) {
                continue;
            }
            let load = wrk::Load {
                connections,
                secs,
                timeout_s,
            };
            for (target, proc, cpu_pid, addr) in self.fleet.clone() {
                let wanted = match scenario {
                    Scenario::Small => target != Target::HaproxySplice,
                    Scenario::Queue => !matches!(target, Target::HaproxySplice | Target::Direct),
                    _ => true,
                };
                if wanted {
                    let at = (proc, cpu_pid, addr);
                    self.measure_wrk(round, scenario, target, at, path, load)?;
                }
            }
        }
        if self.opts.wants(Scenario::Idle) {
            self.idle_round(round)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn measure_wrk(
        &mut self,
        round: usize,
        scenario: Scenario,
        target: Target,
        (proc, cpu_pid, addr): (ProcId, Option<u32>, SocketAddr),
        path: &str,
        load: wrk::Load,
    ) -> Result<(), String> {
        let wrk = self.tools.wrk.clone().ok_or("wrk is missing")?;
        let url = format!("http://{addr}{path}");
        let warm = wrk::Load { secs: 1, ..load };
        let label = format!(
            "[{round}/{}] {:<6} {:<15}",
            self.opts.rounds,
            scenario.name(),
            target.name()
        );
        let warmed = wrk::run(&mut self.lab, &wrk, &url, warm);
        let overflows_before = lab::listen_overflows();
        let cpu_before = cpu_pid.and_then(lab::cpu_seconds);
        let measured = warmed.and_then(|_| wrk::run(&mut self.lab, &wrk, &url, load));
        let cpu_used = cpu_pid
            .and_then(lab::cpu_seconds)
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        let overflows = lab::listen_overflows()
            .zip(overflows_before)
            .map_or(0, |(after, before)| after.saturating_sub(before));
        lab::check_interrupt()?;
        let summary = match measured {
            Ok(s) => s,
            Err(e) => {
                println!("{label} FAILED: {e}");
                self.results
                    .problem(scenario, target, format!("round {round}: {e}"));
                return Ok(());
            }
        };
        let r = &mut self.results;
        let line = if scenario == Scenario::Large {
            let gbps = summary.bytes_per_sec / 1e9;
            r.add(scenario, &report::GB_PER_SEC, target, gbps);
            format!("{gbps:.3} GB/s ({:.0} req/s)", summary.requests_per_sec)
        } else {
            r.add(
                scenario,
                &report::REQUESTS_PER_SEC,
                target,
                summary.requests_per_sec,
            );
            r.add(scenario, &report::P50_MS, target, summary.p50_ms);
            r.add(scenario, &report::P99_MS, target, summary.p99_ms);
            let requests = summary.requests_per_sec * f64::from(load.secs);
            let cpu = match cpu_used {
                Some(used) if requests > 0.0 => {
                    let us = used * 1e6 / requests;
                    r.add(scenario, &report::CPU_US_PER_REQUEST, target, us);
                    format!("  proxy CPU {us:.2} µs/request")
                }
                _ => String::new(),
            };
            format!(
                "{:>9} req/s  p50 {:.3} ms  p99 {:.3} ms{cpu}",
                report::number(summary.requests_per_sec, 0),
                summary.p50_ms,
                summary.p99_ms
            )
        };
        let line = if overflows > 0 {
            // Not an error of the target, but it explains 1 s latencies: a
            // dropped SYN is retried after a second.
            *self.overflows.entry((scenario, target)).or_default() += overflows;
            format!("{line}  ({overflows} listen-queue overflows in the kernel)")
        } else {
            line
        };
        let r = &mut self.results;
        match summary.errors() {
            Some(e) => {
                println!("{label} {line}  ! {e}");
                r.problem(scenario, target, format!("round {round}: {e}"));
                if let (Target::Nginx, Some(log)) = (target, &self.nginx_error_log) {
                    let text = std::fs::read_to_string(log).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    for l in &lines[lines.len().saturating_sub(3)..] {
                        println!("    nginx error log: {l}");
                    }
                }
            }
            None => println!("{label} {line}"),
        }
        if let Err(e) = self.lab.check_alive(proc) {
            return Err(format!("{}: {e}", target.name()));
        }
        Ok(())
    }

    /// One idle-connection measurement per proxy, each on a fresh process.
    fn idle_round(&mut self, round: usize) -> Result<(), String> {
        // This harness holds the connections too: keep within its limit.
        let cap = self.nofile.saturating_sub(500) as usize;
        let want = self.opts.idle_conns.min(cap);
        let app = self.app.1;
        for target in [Target::Swiftiply, Target::Haproxy, Target::Nginx] {
            let label = format!(
                "[{round}/{}] {:<6} {:<15}",
                self.opts.rounds,
                "idle",
                target.name()
            );
            let started = self.start_for_idle(target, app, want);
            let (procs, pid, addr, held) = match started {
                Ok(Some(s)) => s,
                Ok(None) => continue,
                Err(e) => {
                    println!("{label} FAILED to start: {e}");
                    self.results
                        .problem(Scenario::Idle, target, format!("round {round}: {e}"));
                    continue;
                }
            };
            let measured = idle::measure(&self.lab, procs[0], pid, addr, held);
            for p in procs {
                self.lab.finish(p);
            }
            lab::check_interrupt()?;
            match measured {
                Ok(m) => {
                    let per = m.per_connection();
                    self.results
                        .add(Scenario::Idle, &report::IDLE_BYTES, target, per);
                    self.results
                        .add(Scenario::Idle, &report::IDLE_HELD, target, m.held as f64);
                    println!(
                        "{label} {} connections: RSS {:.1} MB at rest, {:.1} MB with them: {} bytes each{}",
                        report::number(m.held as f64, 0),
                        m.rest_bytes as f64 / 1e6,
                        m.loaded_bytes as f64 / 1e6,
                        report::number(per, 0),
                        if m.settled { "" } else { " (RSS still moving after 15 s)" }
                    );
                    if let Some(s) = m.shortfall {
                        self.results
                            .problem(Scenario::Idle, target, format!("round {round}: {s}"));
                    }
                }
                Err(e) => {
                    println!("{label} FAILED: {e}");
                    self.results
                        .problem(Scenario::Idle, target, format!("round {round}: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Starts a fresh `target` for the idle measurement: the processes to
    /// stop afterwards (the proxy first), the pid whose RSS counts, the
    /// address, and how many connections it can take. `None`: not installed.
    #[allow(clippy::type_complexity)]
    fn start_for_idle(
        &mut self,
        target: Target,
        app: SocketAddr,
        want: usize,
    ) -> Result<Option<(Vec<ProcId>, u32, SocketAddr, usize)>, String> {
        let wc = self.nginx_worker_connections(want + 256);
        let lab = &mut self.lab;
        match target {
            Target::Swiftiply => {
                let s = peers::start_swiftiply(lab, &self.bins, None)?;
                let pid = lab.pid(s.proc).ok_or("swiftiply exited")?;
                self.show_config("swiftiply", &peers::swiftiply_config());
                Ok(Some((vec![s.proc, s.backend_app], pid, s.clients, want)))
            }
            Target::Haproxy => {
                let Some(hap) = self.tools.haproxy.clone() else {
                    return Ok(None);
                };
                // The maxconn that fitted last time, so the search for one
                // (and its messages) happens once.
                let fitted = self.idle_haproxy_maxconn;
                let plan = peers::HaproxyPlan {
                    maxconn: fitted.unwrap_or(want + 10),
                    nofile: Some(self.nofile),
                    splice: false,
                };
                let h = peers::start_haproxy(lab, &hap, app, plan, None)?;
                self.idle_haproxy_maxconn = Some(h.maxconn);
                let pid = lab.pid(h.proc).ok_or("haproxy exited")?;
                let held = want.min(h.maxconn.saturating_sub(5));
                if held < want && fitted.is_none() {
                    println!(
                        "haproxy: holds {held} idle connections (maxconn {} is what fits the \
                         descriptor limit {})",
                        h.maxconn, self.nofile
                    );
                }
                self.show_config("haproxy (idle connections)", &h.config);
                Ok(Some((vec![h.proc], pid, h.plain, held)))
            }
            Target::Nginx => {
                let Some(ngx) = self.tools.nginx.clone() else {
                    return Ok(None);
                };
                let n = peers::start_nginx(lab, &ngx, app, wc, Some(self.nofile), None)?;
                let held = want.min(wc.saturating_sub(64));
                self.show_config("nginx (idle connections)", &n.config);
                Ok(Some((vec![n.proc], n.serving_pid, n.addr, held)))
            }
            _ => Ok(None),
        }
    }

    /// Allocations per request (in-process), then instructions per request
    /// (callgrind) for each proxy that runs under valgrind.
    fn cost(&mut self) -> Result<(), String> {
        println!("\n== cost per request");
        match allocs::measure(&self.lab) {
            Ok(a) => {
                println!(
                    "swiftiply: {:.3} heap allocations and {:.1} bytes allocated per request \
                     on the reactor thread ({} allocations during the {} warm-up requests)",
                    a.per_request,
                    a.bytes_per_request,
                    a.warmup_allocations,
                    allocs::WARMUP
                );
                let r = &mut self.results;
                r.add(
                    Scenario::Cost,
                    &report::ALLOCS,
                    Target::Swiftiply,
                    a.per_request,
                );
                r.add(
                    Scenario::Cost,
                    &report::ALLOC_BYTES,
                    Target::Swiftiply,
                    a.bytes_per_request,
                );
            }
            Err(e) => {
                println!("allocations per request FAILED: {e}");
                self.results.problem(
                    Scenario::Cost,
                    Target::Swiftiply,
                    format!("allocations: {e}"),
                );
            }
        }
        lab::check_interrupt()?;
        let Some(valgrind) = self.tools.valgrind.clone() else {
            self.results.note(
                Scenario::Cost,
                "instructions per request: skipped, valgrind not found (Debian: valgrind)".into(),
            );
            return Ok(());
        };
        let setup = callgrind::Setup {
            valgrind: &valgrind,
            bins: &self.bins,
            app: self.app.1,
        };
        let programs = [
            (Target::Swiftiply, Some(self.bins.swiftiply.clone())),
            (Target::Haproxy, self.tools.haproxy.clone()),
            (Target::Nginx, self.tools.nginx.clone()),
        ];
        for (target, program) in programs {
            let Some(program) = program else {
                continue;
            };
            println!(
                "callgrind: {} ({} and {} requests; this takes a while)",
                target.name(),
                callgrind::N1,
                callgrind::N2
            );
            match callgrind::instructions_per_request(&mut self.lab, &setup, target, &program) {
                Ok(i) => {
                    println!(
                        "callgrind: {}: {:.0} instructions per request",
                        target.name(),
                        i
                    );
                    self.results
                        .add(Scenario::Cost, &report::INSTRUCTIONS, target, i);
                }
                Err(e) => {
                    lab::check_interrupt()?;
                    println!("callgrind: {}: not measured: {e}", target.name());
                    self.results.note(
                        Scenario::Cost,
                        format!(
                            "instructions per request, {}: not measured under valgrind ({}; \
                             details above)",
                            target.name(),
                            first_line(&e)
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// Lines under the table that combine scenarios.
    fn derived_notes(&mut self) {
        let r = &mut self.results;
        let small = r.median(
            Scenario::Small,
            &report::REQUESTS_PER_SEC,
            Target::Swiftiply,
        );
        let queue = r.median(
            Scenario::Queue,
            &report::REQUESTS_PER_SEC,
            Target::Swiftiply,
        );
        if let (Some(s), Some(q)) = (small, queue) {
            r.note(
                Scenario::Queue,
                format!(
                    "swiftiply requests/s with {QUEUE_CONNS} connections ÷ with {SMALL_CONNS}: {:.2}",
                    q / s
                ),
            );
        }
        let nginx_used = self.fleet.iter().any(|f| f.0 == Target::Nginx);
        if nginx_used {
            for s in [Scenario::Small, Scenario::Queue] {
                r.note(
                    s,
                    format!(
                        "nginx cannot queue (open source): keepalive {} with no cap, one upstream \
                         connection per active client; haproxy and swiftiply use {}",
                        peers::NGINX_KEEPALIVE,
                        peers::BACKEND_CONNS
                    ),
                );
            }
        }
        for (&(scenario, target), n) in &self.overflows {
            let why = if target == Target::Nginx {
                "; nginx keeps at most its keep-alive pool of idle upstream connections, \
                 closes the others and opens new ones, and the app's accept queue overflows"
            } else {
                ""
            };
            r.note(
                scenario,
                format!(
                    "{}: {n} listen-queue overflows over all rounds (a dropped SYN is \
                     retried after 1 s){why}",
                    target.name()
                ),
            );
        }
        if self.tools.nginx.is_some() && self.opts.wants(Scenario::Idle) {
            r.note(
                Scenario::Idle,
                "nginx allocates and touches its worker_connections slots at start: they are \
                 in its RSS at rest, not in the figure per connection"
                    .into(),
            );
        }
        if self.lab.cpus.is_some() {
            r.note(
                Scenario::Small,
                "direct: the backend and wrk share one CPU; the proxy's CPU is idle".into(),
            );
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
