//! `swiftiply [-d] [-c] CONFIG.yml` — runs the proxy, in the foreground or
//! (`-d`, `daemonize: true`) as a daemon.
//!
//! Start-up order: load the config → bind every listener (as root, so ports
//! below 1024 work) → detach (daemon mode) → write the pid file → drop
//! privileges → start the worker threads → report ready. Nothing forks or
//! changes credentials once a thread exists (`swiftiply::daemon`).

use std::path::PathBuf;
use std::process::ExitCode;

use swiftiply::config::Config;
use swiftiply::daemon::{self, PidFile};
use swiftiply::reactor::{current_worker, Bound, Ended, Workers};

const USAGE: &str = "\
usage: swiftiply [CONFIG.yml]            run the proxy (built-in default without a file)
       swiftiply -c CONFIG.yml           the same
       swiftiply -d CONFIG.yml           run it as a daemon (as `daemonize: true`):
                                         exits 0 once it serves, 1 if it cannot start
       swiftiply --check CONFIG.yml      validate and print the normalized config
       swiftiply --version | --help

With no config file, clients connect to 127.0.0.1:8080 and backends dial in
to 127.0.0.1:30000 (one default section). RUST_LOG overrides the log level
set by the config's logger.log_level (0 errors, 1 warnings, 2 info, 3 debug).";

enum Mode {
    Run {
        config: Option<PathBuf>,
        /// `-d`: daemon mode, whatever the config says.
        daemonize: bool,
    },
    Check(PathBuf),
}

fn parse_args() -> Result<Mode, String> {
    let mut args = std::env::args_os().skip(1);
    let mut config = None;
    let mut check = false;
    let mut daemonize = false;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("-h" | "--help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            Some("-V" | "-v" | "--version") => {
                println!("swiftiply {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            Some("--check") => check = true,
            Some("-d" | "--daemonize") => daemonize = true,
            Some("-c" | "--config") => {
                let path = args.next().ok_or("-c needs a config file path")?;
                config = Some(PathBuf::from(path));
            }
            Some(s) if s.starts_with('-') => return Err(format!("unknown option {s}")),
            _ if config.is_none() => config = Some(PathBuf::from(arg)),
            _ => return Err("more than one config file given".into()),
        }
    }
    match (check, config) {
        (true, _) if daemonize => Err("--check and -d do not go together".into()),
        (true, Some(path)) => Ok(Mode::Check(path)),
        (true, None) => Err("--check needs a config file".into()),
        (false, config) => Ok(Mode::Run { config, daemonize }),
    }
}

/// Settings this version accepts in a config but cannot honour yet (TLS):
/// running without them would be unsafe or surprising, so they stop the
/// start.
fn unsupported(config: &Config) -> Vec<String> {
    let mut fatal = Vec::new();
    if !config.ssl.is_empty() {
        fatal.push("ssl: TLS listeners are not supported yet; terminate TLS in front of swiftiply and remove the `ssl` entries".to_string());
    }
    fatal
}

/// The start-up steps after binding, each where it is safe: the pid file
/// is written by the process that will serve (after detaching) and before
/// root is dropped (its directory may be root's); privileges are dropped
/// while there is one thread; then the workers start. The pid file guard
/// removes the file if a later step fails.
fn start(bound: Bound, config: &Config) -> Result<(Workers, Option<PidFile>), String> {
    let pidfile = config.pidfile.as_deref().map(PidFile::create).transpose()?;
    daemon::drop_privileges(config.user.as_deref(), config.group.as_deref())?;
    let workers = bound.start().map_err(|e| e.to_string())?;
    Ok((workers, pidfile))
}

/// Where the proxy listens, as printed once it serves (by the daemon's
/// parent in daemon mode).
fn startup_lines(workers: &Workers) -> String {
    let mut out = String::new();
    for addr in workers.client_addrs() {
        out.push_str(&format!("swiftiply: clients listening on {addr}\n"));
    }
    for (section, addr) in workers.backend_addrs() {
        out.push_str(&format!(
            "swiftiply: section {section} backends listening on {addr}\n"
        ));
    }
    if workers.count() > 1 {
        out.push_str(&format!("swiftiply: {} workers\n", workers.count()));
    }
    out.push_str("swiftiply: ready\n");
    out
}

/// Logs go to stderr as `[time LEVEL] message`; with several workers, as
/// `[time LEVEL worker N] message` from a worker's thread.
fn init_logging(level: u8, workers: usize) {
    let default = match level {
        0 => "error",
        1 => "warn",
        2 => "info",
        _ => "debug",
    };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    builder.format_target(false);
    if workers > 1 {
        builder.format(|buf, record| {
            use std::io::Write;
            let ts = buf.timestamp_seconds();
            match current_worker() {
                Some(w) => writeln!(
                    buf,
                    "[{ts} {:<5} worker {w}] {}",
                    record.level(),
                    record.args()
                ),
                None => writeln!(buf, "[{ts} {:<5}] {}", record.level(), record.args()),
            }
        });
    }
    builder.init();
}

fn main() -> ExitCode {
    let mode = match parse_args() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("swiftiply: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (mut config, path, daemonize) = match mode {
        Mode::Check(path) => {
            return match Config::load(&path) {
                Ok(cfg) => {
                    print!("{}", cfg.to_yaml());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("swiftiply: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Mode::Run {
            config: Some(path),
            daemonize,
        } => match Config::load(&path) {
            Ok(cfg) => (cfg, Some(path), daemonize),
            Err(e) => {
                eprintln!("swiftiply: {e}");
                return ExitCode::FAILURE;
            }
        },
        Mode::Run {
            config: None,
            daemonize,
        } => (Config::builtin_default(), None, daemonize),
    };
    config.daemonize |= daemonize;
    init_logging(config.log_level, config.workers);
    let fatal = unsupported(&config);
    if !fatal.is_empty() {
        for f in &fatal {
            eprintln!("swiftiply: {f}");
        }
        return ExitCode::FAILURE;
    }
    if path.is_none() {
        eprintln!(
            "swiftiply: no config file given; running on the built-in default \
             (clients on 127.0.0.1:8080, backends connect to 127.0.0.1:30000)"
        );
    }
    let bound = match Workers::bind(&config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("swiftiply: {e}");
            return ExitCode::FAILURE;
        }
    };
    // From here on a daemon reports its outcome to the process that
    // started it, which is waiting to exit with it.
    let detached = if config.daemonize {
        match daemon::detach() {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("swiftiply: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    // Dropped when main returns: removes the pid file.
    let (workers, _pidfile) = match start(bound, &config) {
        Ok(started) => started,
        Err(e) => {
            match detached {
                Some(d) => d.failed(&e),
                None => eprintln!("swiftiply: {e}"),
            }
            return ExitCode::FAILURE;
        }
    };
    let startup = startup_lines(&workers);
    match detached {
        Some(d) => d.ready(&startup),
        None => eprint!("{startup}"),
    }
    // The workers run until a signal stops them, or until one of them
    // fails; then the whole process stops (the others with it), rather
    // than serve on half-alive.
    match workers.wait(path.as_deref()) {
        Ended::Stopped => {
            eprintln!("swiftiply: stopped");
            ExitCode::SUCCESS
        }
        Ended::StoppedNow => {
            eprintln!("swiftiply: stopped at once");
            ExitCode::SUCCESS
        }
        Ended::Failed(exit) => {
            eprintln!("swiftiply: {exit}");
            ExitCode::FAILURE
        }
    }
}
