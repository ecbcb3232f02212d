//! `swiftiply [-c] CONFIG.yml` — runs the proxy in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use swiftiply::config::Config;
use swiftiply::reactor::Reactor;

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

fn init_logging(level: u8) {
    let default = match level {
        0 => "error",
        1 => "warn",
        2 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_target(false)
        .init();
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
    init_logging(config.log_level);
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
    let mut reactor = match Reactor::bind(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("swiftiply: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in reactor.client_addrs() {
        eprintln!("swiftiply: clients listening on {addr}");
    }
    for (section, addr) in reactor.backend_addrs() {
        eprintln!("swiftiply: section {section} backends listening on {addr}");
    }
    eprintln!("swiftiply: ready");
    match reactor.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swiftiply: event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
