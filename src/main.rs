//! `swiftiply [-c] CONFIG.yml` — runs the proxy in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use swiftiply::config::Config;
use swiftiply::reactor::{current_worker, Ended, Workers};

const USAGE: &str = "\
usage: swiftiply [CONFIG.yml]            run the proxy (built-in default without a file)
       swiftiply -c CONFIG.yml           the same
       swiftiply --check CONFIG.yml      validate and print the normalized config
       swiftiply --version | --help

With no config file, clients connect to 127.0.0.1:8080 and backends dial in
to 127.0.0.1:30000 (one default section). RUST_LOG overrides the log level
set by the config's logger.log_level (0 errors, 1 warnings, 2 info, 3 debug).";

enum Mode {
    Run(Option<PathBuf>),
    Check(PathBuf),
}

fn parse_args() -> Result<Mode, String> {
    let mut args = std::env::args_os().skip(1);
    let mut config = None;
    let mut check = false;
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
        (true, Some(path)) => Ok(Mode::Check(path)),
        (true, None) => Err("--check needs a config file".into()),
        (false, path) => Ok(Mode::Run(path)),
    }
}

/// Settings this version accepts in a config but cannot honour yet (TLS,
/// privilege drop, daemon mode): running without them would be unsafe or
/// surprising, so they stop the start.
fn unsupported(config: &Config) -> Vec<String> {
    let mut fatal = Vec::new();
    if !config.ssl.is_empty() {
        fatal.push("ssl: TLS listeners are not supported yet; terminate TLS in front of swiftiply and remove the `ssl` entries".to_string());
    }
    if config.user.is_some() || config.group.is_some() {
        fatal.push("user/group: dropping privileges is not supported yet; start swiftiply as the user it should run as".to_string());
    }
    if config.daemonize {
        fatal.push("daemonize: daemon mode is not supported yet; run swiftiply in the foreground under a supervisor (systemd, runit) and set `daemonize: false`".to_string());
    }
    fatal
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
    let (config, path) = match mode {
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
        Mode::Run(Some(path)) => match Config::load(&path) {
            Ok(cfg) => (cfg, Some(path)),
            Err(e) => {
                eprintln!("swiftiply: {e}");
                return ExitCode::FAILURE;
            }
        },
        Mode::Run(None) => (Config::builtin_default(), None),
    };
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
    let workers = match Workers::start(&config) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("swiftiply: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in workers.client_addrs() {
        eprintln!("swiftiply: clients listening on {addr}");
    }
    for (section, addr) in workers.backend_addrs() {
        eprintln!("swiftiply: section {section} backends listening on {addr}");
    }
    if workers.count() > 1 {
        eprintln!("swiftiply: {} workers", workers.count());
    }
    eprintln!("swiftiply: ready");
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
