//! `swiftiply-bridge` — puts an ordinary HTTP/1.1 application server behind
//! Swiftiply. All the work is in `swiftiply::bridge`; this is the command
//! line, logging and exit status.

use std::process::ExitCode;

use swiftiply::bridge::{self, Command, USAGE};

fn main() -> ExitCode {
    let opts = match bridge::parse_args(std::env::args_os().skip(1)) {
        Ok(Command::Run(opts)) => opts,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("swiftiply-bridge {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("swiftiply-bridge: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    match bridge::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("swiftiply-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}
