//! Command-line options of `swiftiply-bridge`: parsing and validation.
//!
//! Invariants: a `BridgeOptions` that `parse_args` returns is complete and
//! consistent — at least one proxy address, at least one upstream (given or
//! to be spawned), every address with a port, counts and ports in range — so
//! `run` never has to second-guess it. Upstream addresses are resolved here,
//! once; proxy addresses are resolved by the backend library on every
//! (re)connect, so a proxy's name may change while the bridge runs.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::backend::StreamFraming;

pub const USAGE: &str = "\
usage: swiftiply-bridge --connect HOST:PORT [--connect HOST:PORT]...
                        (--upstream HOST:PORT... | --spawn 'CMD' [-n N])
                        [options]

Lets an ordinary HTTP/1.1 application server sit behind Swiftiply: holds
backend connections to the proxy and forwards each request to an upstream
server over a keep-alive connection pool.

  --connect HOST:PORT   a proxy `outgoing` address to dial in to; give it
                        several times to serve several proxies at once
  --key KEY             the section's key (default: none)
  --connections N       connections held to each proxy (default 4): how many
                        requests the bridge serves at once per proxy
  --upstream HOST:PORT  an HTTP/1.1 server to forward to; several are
                        balanced by fewest requests in flight
  --spawn 'CMD'         start the application: `sh -c CMD` with PORT set,
                        and forward to 127.0.0.1:PORT (write `exec app ...`
                        so the pid file names the app, not the shell); a
                        copy that dies is restarted, with a back-off
  -n N                  how many copies --spawn starts (default 1), on ports
                        P, P+1, ... P+N-1
  --port-base P         first port for --spawn (default 3000)
  --pid-dir DIR         where --spawn writes app-<i>.pid (default: a new
                        directory under the system temp directory)
  --wait SECS           how long to wait for spawned apps to accept
                        connections before serving (default 10)
  --timeout SECS        longest silence from an upstream while it holds a
                        request (default 60; 504 if nothing was sent yet)
  --framing F           how streamed responses are framed to the proxy:
                        chunked (default) or packets (classic proxies)
  -h, --help            this text
  -V, --version         the version

SIGTERM or SIGINT: stop taking requests, finish those in flight, stop the
spawned apps, exit 0. A second signal exits at once. Logs go to stderr;
RUST_LOG sets the level (default info).";

/// The `--spawn` part of the options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnOptions {
    /// Run as `sh -c COMMAND` with `PORT` set.
    pub command: String,
    pub copies: usize,
    pub port_base: u16,
    /// `None`: a directory of our own under `std::env::temp_dir()`.
    pub pid_dir: Option<PathBuf>,
    /// How long to wait for every copy to accept connections.
    pub ready_timeout: Duration,
}

impl SpawnOptions {
    /// The port of copy `i`.
    pub fn port(&self, i: usize) -> u16 {
        self.port_base + i as u16
    }
}

#[derive(Clone, Debug)]
pub struct BridgeOptions {
    /// Proxy `outgoing` addresses; `connections` are held to each.
    pub connect: Vec<String>,
    pub key: String,
    pub connections: usize,
    /// Upstreams given with `--upstream`, resolved.
    pub upstreams: Vec<SocketAddr>,
    pub spawn: Option<SpawnOptions>,
    /// Longest silence from an upstream holding a request.
    pub timeout: Duration,
    pub framing: StreamFraming,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(BridgeOptions),
    Help,
    Version,
}

const MAX_CONNECTIONS: usize = 4096;
const MAX_COPIES: usize = 256;

/// Parses the arguments after the program name. `Err` is a message for a
/// person (the caller adds the usage and exits 2).
pub fn parse_args<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator<Item = OsString>,
{
    let args: Vec<OsString> = args.into_iter().collect();
    // Help and version win over whatever else is wrong with the line.
    for a in &args {
        match a.to_str() {
            Some("-h" | "--help") => return Ok(Command::Help),
            Some("-V" | "--version") => return Ok(Command::Version),
            _ => {}
        }
    }
    let mut args = args.into_iter();
    let mut connect = Vec::new();
    let mut key = String::new();
    let mut connections = 4;
    let mut upstreams = Vec::new();
    let mut command = None;
    let mut copies = None;
    let mut port_base = None;
    let mut pid_dir = None;
    let mut wait = None;
    let mut timeout = Duration::from_secs(60);
    let mut framing = StreamFraming::Chunked;

    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        // `--name=value` and `--name value` both work.
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args
                    .next()
                    .ok_or_else(|| format!("{name} needs {what}"))?
                    .into_string()
                    .map_err(|a| format!("{name}: {a:?} is not valid UTF-8")),
            }
        };
        match name.as_str() {
            "--connect" => {
                let v = value("a proxy address (HOST:PORT)")?;
                check_host_port("--connect", &v)?;
                connect.push(v);
            }
            "--key" => {
                key = value("a key")?;
                if key.len() > 255 {
                    return Err("--key: a key is at most 255 bytes".into());
                }
            }
            "--connections" => {
                connections = number("--connections", &value("a number")?, 1, MAX_CONNECTIONS)?;
            }
            "--upstream" => {
                let v = value("an upstream address (HOST:PORT)")?;
                upstreams.push(resolve("--upstream", &v)?);
            }
            "--spawn" => {
                let v = value("a shell command")?;
                if v.trim().is_empty() {
                    return Err("--spawn: the command is empty".into());
                }
                command = Some(v);
            }
            "-n" | "--copies" => copies = Some(number(&name, &value("a number")?, 1, MAX_COPIES)?),
            "--port-base" => {
                port_base = Some(number("--port-base", &value("a port")?, 1, 65535)? as u16);
            }
            "--pid-dir" => {
                let v = value("a directory")?;
                if v.is_empty() {
                    return Err("--pid-dir: the directory is empty".into());
                }
                pid_dir = Some(PathBuf::from(v));
            }
            "--wait" => wait = Some(seconds("--wait", &value("seconds")?)?),
            "--timeout" => {
                timeout = seconds("--timeout", &value("seconds")?)?;
                if timeout.is_zero() {
                    return Err("--timeout must be more than 0".into());
                }
            }
            "--framing" => {
                framing = match value("chunked or packets")?.as_str() {
                    "chunked" => StreamFraming::Chunked,
                    "packets" => StreamFraming::Packets,
                    other => {
                        return Err(format!(
                            "--framing: {other:?} is neither `chunked` nor `packets`"
                        ))
                    }
                }
            }
            _ if inline.is_some() || name.starts_with('-') => {
                return Err(format!("unknown option {name}"))
            }
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }

    if connect.is_empty() {
        return Err("no proxy given: --connect HOST:PORT is required".into());
    }
    let spawn = match command {
        Some(command) => {
            let copies = copies.unwrap_or(1);
            let port_base = port_base.unwrap_or(3000);
            if usize::from(port_base) + copies - 1 > 65535 {
                return Err(format!(
                    "--port-base {port_base} with -n {copies} runs past port 65535"
                ));
            }
            Some(SpawnOptions {
                command,
                copies,
                port_base,
                pid_dir,
                ready_timeout: wait.unwrap_or(Duration::from_secs(10)),
            })
        }
        None => {
            for (given, opt) in [
                (copies.is_some(), "-n"),
                (port_base.is_some(), "--port-base"),
                (pid_dir.is_some(), "--pid-dir"),
                (wait.is_some(), "--wait"),
            ] {
                if given {
                    return Err(format!("{opt} only means something with --spawn"));
                }
            }
            None
        }
    };
    if upstreams.is_empty() && spawn.is_none() {
        return Err("nothing to forward to: give --upstream HOST:PORT or --spawn 'CMD'".into());
    }
    Ok(Command::Run(BridgeOptions {
        connect,
        key,
        connections,
        upstreams,
        spawn,
        timeout,
        framing,
    }))
}

fn check_host_port(opt: &str, v: &str) -> Result<(), String> {
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(format!("{opt} {v:?}: expected HOST:PORT"));
    };
    if host.is_empty() {
        return Err(format!("{opt} {v:?}: the host is missing"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{opt} {v:?}: {port:?} is not a port (1-65535)")),
    }
}

fn resolve(opt: &str, v: &str) -> Result<SocketAddr, String> {
    check_host_port(opt, v)?;
    let addrs: Vec<SocketAddr> = v
        .to_socket_addrs()
        .map_err(|e| format!("{opt} {v:?}: cannot resolve: {e}"))?
        .collect();
    // Prefer IPv4 for names such as `localhost` that resolve both ways:
    // most application servers listen on 127.0.0.1 by default.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{opt} {v:?}: resolves to no address"))
}

fn number(opt: &str, v: &str, min: usize, max: usize) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{opt}: {v:?} is not a number from {min} to {max}")),
    }
}

fn seconds(opt: &str, v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s.is_finite() && (0.0..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{opt}: {v:?} is not a number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(OsString::from))
    }

    fn run(args: &[&str]) -> BridgeOptions {
        match parse(args) {
            Ok(Command::Run(o)) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn a_full_command_line() {
        let o = run(&[
            "--connect",
            "127.0.0.1:30000",
            "--connect=127.0.0.1:30001",
            "--key",
            "k",
            "--connections",
            "8",
            "--upstream",
            "127.0.0.1:3000",
            "--upstream=127.0.0.1:3001",
            "--timeout",
            "2.5",
            "--framing",
            "packets",
        ]);
        assert_eq!(o.connect, ["127.0.0.1:30000", "127.0.0.1:30001"]);
        assert_eq!(o.key, "k");
        assert_eq!(o.connections, 8);
        assert_eq!(o.upstreams.len(), 2);
        assert_eq!(o.upstreams[1].port(), 3001);
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.framing, StreamFraming::Packets);
        assert!(o.spawn.is_none());
    }

    #[test]
    fn spawn_defaults() {
        let o = run(&["--connect", "h:1", "--spawn", "app --port $PORT"]);
        let s = o.spawn.unwrap();
        assert_eq!((s.copies, s.port_base, s.port(0)), (1, 3000, 3000));
        assert_eq!(s.ready_timeout, Duration::from_secs(10));
        assert!(s.pid_dir.is_none() && o.upstreams.is_empty());
        let o = run(&[
            "--connect",
            "h:1",
            "--spawn",
            "x",
            "-n",
            "3",
            "--port-base",
            "4000",
            "--pid-dir",
            "/tmp/p",
        ]);
        let s = o.spawn.unwrap();
        assert_eq!((s.copies, s.port(2)), (3, 4002));
        assert_eq!(s.pid_dir.unwrap(), PathBuf::from("/tmp/p"));
    }

    #[test]
    fn help_and_version_win() {
        assert!(matches!(parse(&["--help"]), Ok(Command::Help)));
        assert!(matches!(
            parse(&["--connect", "x", "-V"]),
            Ok(Command::Version)
        ));
    }

    #[test]
    fn bad_command_lines_say_why() {
        for (args, says) in [
            (&["--upstream", "127.0.0.1:1"][..], "--connect"),
            (&["--connect", "127.0.0.1:1"], "--upstream"),
            (&["--connect", "127.0.0.1"], "HOST:PORT"),
            (
                &["--connect", "127.0.0.1:0", "--upstream", "127.0.0.1:1"],
                "port",
            ),
            (&["--connect", "h:1", "--upstream", "127.0.0.1:x"], "port"),
            (&["--connect", "h:1", "--upstream"], "needs"),
            (
                &[
                    "--connect",
                    "h:1",
                    "--upstream",
                    "127.0.0.1:1",
                    "--connections",
                    "0",
                ],
                "--connections",
            ),
            (
                &["--connect", "h:1", "--upstream", "127.0.0.1:1", "-n", "2"],
                "only means",
            ),
            (&["--connect", "h:1", "--spawn", "x", "-n", "0"], "-n"),
            (
                &[
                    "--connect",
                    "h:1",
                    "--spawn",
                    "x",
                    "-n",
                    "2",
                    "--port-base",
                    "65535",
                ],
                "65535",
            ),
            (&["--connect", "h:1", "--spawn", " "], "empty"),
            (
                &["--connect", "h:1", "--spawn", "x", "--bogus"],
                "unknown option --bogus",
            ),
            (&["--connect", "h:1", "--spawn", "x", "stray"], "unexpected"),
            (
                &["--connect", "h:1", "--spawn", "x", "--framing", "raw"],
                "--framing",
            ),
            (
                &["--connect", "h:1", "--spawn", "x", "--timeout", "0"],
                "--timeout",
            ),
            (
                &["--connect", "h:1", "--spawn", "x", "--timeout", "soon"],
                "--timeout",
            ),
        ] {
            match parse(args) {
                Err(e) => assert!(
                    e.contains(says),
                    "{args:?}: {e:?} does not mention {says:?}"
                ),
                Ok(c) => panic!("{args:?} was accepted: {c:?}"),
            }
        }
        let long_key = "k".repeat(256);
        assert!(parse(&["--connect", "h:1", "--spawn", "x", "--key", &long_key]).is_err());
    }
}
