//! Setting up a run: the command line, the tools found on this machine,
//! the header that says what was run where (machine, versions, command),
//! and the release build of the proxy and the example application.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::lab;
use crate::peers::Bins;
use crate::report::Scenario;
use crate::wrk;

pub const USAGE: &str = "\
usage: cargo bench --bench compare -- [OPTIONS]

  --rounds N         alternating rounds (default 5)
  --secs N           seconds per measurement (default 5; each is preceded by a 1 s warm-up)
  --only LIST        comma list of: small,large,idle,queue,cost (default: all)
  --idle-conns N     idle keep-alive connections per proxy (default 10000)
  --load-cpus N      CPUs for wrk, the backend and the harness (default 1;
                     the proxy under test always has one CPU of its own)
  --quick            1 round of 2 s: a smoke check

SWIFTIPLY_BIN and APP_BIN, when both set, name prebuilt programs to measure
instead of building them.
  --self-test        check the wrk output parser and exit

Needs wrk (Debian: apt-get install wrk). Uses haproxy, nginx (nginx-light) and
valgrind when present; each missing one is skipped with a line saying so.";

pub struct Options {
    pub rounds: usize,
    pub secs: u32,
    pub only: Vec<Scenario>,
    pub idle_conns: usize,
    pub load_cpus: usize,
    /// The arguments as given, for the "command" line.
    pub args: Vec<String>,
}

impl Options {
    /// `Ok(None)`: help was printed or a self-test passed.
    pub fn parse(args: Vec<String>) -> Result<Option<Options>, String> {
        let mut rounds = None;
        let mut secs = None;
        let mut only = Scenario::ALL.to_vec();
        let mut idle_conns = 10_000;
        let mut load_cpus = 1;
        let mut quick = false;
        let mut shown = Vec::new();
        let mut by_cargo_bench = false;
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            // `cargo bench` adds --bench.
            if arg == "--bench" {
                by_cargo_bench = true;
                continue;
            }
            shown.push(arg.clone());
            let (name, inline) = match arg.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            };
            let mut value = || -> Result<String, String> {
                let v = inline
                    .clone()
                    .or_else(|| it.next())
                    .ok_or_else(|| format!("{name} needs a value"))?;
                shown.push(v.clone());
                Ok(v)
            };
            let number = |v: String| -> Result<usize, String> {
                v.parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("{name}: {v:?} is not a positive number"))
            };
            match name.as_str() {
                "--rounds" => rounds = Some(number(value()?)?),
                "--secs" => {
                    let n = number(value()?)?;
                    secs = Some(u32::try_from(n).map_err(|_| format!("--secs: {n} is too large"))?);
                }
                "--idle-conns" => idle_conns = number(value()?)?,
                "--load-cpus" => load_cpus = number(value()?)?,
                "--quick" => quick = true,
                "--only" => {
                    only = Vec::new();
                    for part in value()?.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let s = Scenario::ALL
                            .into_iter()
                            .find(|s| s.name() == part)
                            .ok_or_else(|| format!("--only: unknown scenario {part:?}"))?;
                        if !only.contains(&s) {
                            only.push(s);
                        }
                    }
                    only.sort();
                    if only.is_empty() {
                        return Err("--only needs at least one scenario".into());
                    }
                }
                "--self-test" => {
                    wrk::self_test()?;
                    println!("wrk output parser: ok");
                    return Ok(None);
                }
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if !by_cargo_bench && shown.is_empty() {
            // `cargo test --all-targets` runs this binary without arguments:
            // check the parser only, rather than start a long benchmark.
            wrk::self_test()?;
            println!(
                "compare: wrk output parser ok; the benchmark runs with \
                 `cargo bench --bench compare` (or with any option, e.g. --rounds 5)"
            );
            return Ok(None);
        }
        Ok(Some(Options {
            rounds: rounds.unwrap_or(if quick { 1 } else { 5 }),
            secs: secs.unwrap_or(if quick { 2 } else { 5 }),
            only,
            idle_conns,
            load_cpus,
            args: shown,
        }))
    }

    pub fn wants(&self, s: Scenario) -> bool {
        self.only.contains(&s)
    }
}

/// The programs found on this machine.
pub struct Tools {
    pub wrk: Option<PathBuf>,
    pub haproxy: Option<PathBuf>,
    pub nginx: Option<PathBuf>,
    pub valgrind: Option<PathBuf>,
}

impl Tools {
    pub fn find() -> Tools {
        Tools {
            wrk: lab::find_tool("wrk"),
            haproxy: lab::find_tool("haproxy"),
            nginx: lab::find_tool("nginx"),
            valgrind: lab::find_tool("valgrind"),
        }
    }
}

pub fn print_header(opts: &Options, tools: &Tools, nofile: u64, cpus: Option<&lab::Cpus>) {
    println!("== swiftiply compare: Swiftiply vs HAProxy vs nginx vs the backend directly");
    println!(
        "command: cargo bench --bench compare{}",
        if opts.args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", opts.args.join(" "))
        }
    );
    let scenarios: Vec<&str> = opts.only.iter().map(|s| s.name()).collect();
    println!(
        "options: {} round(s), {} s per measurement, scenarios {}, {} idle connections",
        opts.rounds,
        opts.secs,
        scenarios.join(","),
        opts.idle_conns
    );
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine: {nproc} CPU(s), {cpu_model}, Linux {kernel}");
    match cpus {
        Some(c) => println!(
            "pinning: the proxy under test on CPU {}; wrk, the backend and this harness on CPU(s) {:?}",
            c.proxy, c.load
        ),
        None => println!("pinning: none (fewer than 2 CPUs available)"),
    }
    println!("descriptor limit (RLIMIT_NOFILE): {nofile}");
    let version = |tool: &Option<PathBuf>, args: &[&str], package: &str| match tool {
        Some(p) => lab::first_line_of(p, args),
        None => format!("not found (Debian package: {package})"),
    };
    println!("wrk:       {}", version(&tools.wrk, &["--version"], "wrk"));
    println!("haproxy:   {}", version(&tools.haproxy, &["-v"], "haproxy"));
    println!(
        "nginx:     {}",
        version(&tools.nginx, &["-v"], "nginx-light")
    );
    println!(
        "valgrind:  {}",
        version(&tools.valgrind, &["--version"], "valgrind (optional)")
    );
    let cargo = cargo_program();
    println!(
        "cargo:     {}",
        lab::first_line_of(Path::new(&cargo), &["--version"])
    );
    let dir = env!("CARGO_MANIFEST_DIR");
    let head = lab::find_tool("git").and_then(|git| {
        let head = lab::stdout_of(&git, &["-C", dir, "rev-parse", "--short", "HEAD"])?;
        let status = lab::stdout_of(
            &git,
            &["-C", dir, "status", "--porcelain", "--untracked-files=no"],
        )?;
        let dirty = if status.trim().is_empty() {
            ""
        } else {
            " (with uncommitted changes)"
        };
        Some(format!("git {}{dirty}", head.trim()))
    });
    println!(
        "swiftiply: {} {}, {}",
        env!("CARGO_PKG_VERSION"),
        dir,
        head.unwrap_or_else(|| "not a git checkout".into())
    );
    println!("needs (Debian packages): wrk; optional: haproxy, nginx-light, valgrind");
    for (tool, name, package) in [
        (&tools.haproxy, "haproxy", "haproxy"),
        (&tools.nginx, "nginx", "nginx-light"),
    ] {
        if tool.is_none() {
            println!("SKIPPED: {name} (not found; Debian package: {package})");
        }
    }
    if tools.valgrind.is_none() && opts.wants(Scenario::Cost) {
        println!(
            "SKIPPED: instructions per request (valgrind not found; Debian package: valgrind)"
        );
    }
}

fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// `cargo build --release --bin swiftiply --example app` (up to 30 min).
///
/// `SWIFTIPLY_BIN` and `APP_BIN` name prebuilt programs instead (for a
/// machine without the toolchain).
pub fn build() -> Result<Bins, String> {
    if let (Some(swiftiply), Some(app)) = (
        std::env::var_os("SWIFTIPLY_BIN"),
        std::env::var_os("APP_BIN"),
    ) {
        let bins = Bins {
            swiftiply: PathBuf::from(swiftiply),
            app: PathBuf::from(app),
        };
        println!(
            "\n== prebuilt programs: {} and {}",
            bins.swiftiply.display(),
            bins.app.display()
        );
        return Ok(bins);
    }
    println!("\n== building: cargo build --release --bin swiftiply --example app");
    let mut child = Command::new(cargo_program())
        .args([
            "build",
            "--release",
            "--bin",
            "swiftiply",
            "--example",
            "app",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let until = lab::after(1800.0);
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for cargo: {e}"))?
        {
            break status;
        }
        if lab::check_interrupt().is_err() || std::time::Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the build was interrupted or took over 30 minutes".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }
    // This binary is target/<profile>/deps/compare-<hash>; the release
    // outputs are in target/release (or target/<triple>/release).
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let release = exe
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(|t| t.join("release"))
        .ok_or("cannot find the target directory")?;
    let bins = Bins {
        swiftiply: release.join("swiftiply"),
        app: release.join("examples").join("app"),
    };
    for p in [&bins.swiftiply, &bins.app] {
        if !p.is_file() {
            return Err(format!("the build did not produce {}", p.display()));
        }
    }
    Ok(bins)
}
