//! Configuration: the YAML file an operator writes, turned into a typed,
//! validated `Config`.
//!
//! INTERFACE CONTRACT (the reactor codes against exactly these items):
//! - `Config::load(path)` / `Config::from_yaml_str(text, origin)` parse, merge
//!   `defaults` into every `map` entry, validate, and return a `Config` or a
//!   `ConfigError` whose Display is a message a person can act on.
//! - `Config::builtin_default()` is what runs with no config file.
//! - `Config::client_addrs()` resolves `cluster_address` x `cluster_port`.
//! - `Config::to_yaml()` prints the normalized config for `--check`.
//! - `Config::validate()` re-checks a `Config` changed in code (e.g. after
//!   command-line overrides) with the same rules as loading a file.
//!
//! How it works, one file per step:
//! - `parse.rs`: the text is deserialized straight into the private `Raw*`
//!   structs of `raw.rs` (`deny_unknown_fields`, lenient scalar types with
//!   their own visitors) so serde_yaml can name an unknown key or bad value
//!   with its line and column.
//! - `merge.rs`: applies the built-in defaults (`builtin.rs`), merges
//!   `defaults` into each `map` entry (the entry's own value wins), and
//!   checks each value; `addresses.rs` reads addresses and host names.
//! - `legacy.rs`: classic keys that no longer mean anything are accepted and
//!   logged at info level.
//! - `cross_checks.rs`: rules that span several keys or sections.
//! - `output.rs`: `to_yaml`, which reads back to an equal `Config`.
//!
//! See `config/example.yml` for every key with comments.

mod addresses;
mod builtin;
mod cross_checks;
mod legacy;
mod merge;
mod output;
mod parse;
mod raw;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub cluster_address: Vec<String>,
    pub cluster_port: Vec<u16>,
    pub daemonize: bool,
    pub pidfile: Option<PathBuf>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// `timeout`: longest wait for a free backend before 503.
    pub timeout: Duration,
    pub health_check_uri: String,
    pub ssl: Vec<SslListener>,
    /// `logger.log_level` (or `logger.level`): 0..=3.
    pub log_level: u8,
    /// `header_timeout`: a request head must be complete within this (408).
    pub header_timeout: Duration,
    /// `keepalive_timeout`: an idle keep-alive client is closed after this.
    pub keepalive_timeout: Duration,
    /// `backend_timeout`: no byte moved for this long while a backend holds
    /// the request: 504 (or close if the response started).
    pub backend_timeout: Duration,
    /// `handshake_timeout`: a backend's handshake must be complete within this.
    pub handshake_timeout: Duration,
    /// `max_header_bytes`: request line + headers limit (414 / 431).
    pub max_header_bytes: usize,
    /// `max_body_bytes`: request body limit (413); None = unlimited.
    pub max_body_bytes: Option<u64>,
    /// `request_buffer`: a request body of at most this many bytes is read
    /// whole, in memory, before a backend is taken for it.
    pub request_buffer: usize,
    /// `request_spool_directory`: where larger bodies are spooled (as
    /// unlinked files) until complete; None = the system's temp directory.
    pub request_spool_directory: Option<PathBuf>,
    /// `request_spool_limit`: bytes of spooled bodies one worker keeps on
    /// disk; 0 turns spooling off (larger bodies are streamed to a backend
    /// under `min_body_rate`).
    pub request_spool_limit: u64,
    /// `min_body_rate`: bytes per second a request body must average, after
    /// `min_body_rate_grace`, while the proxy waits for it (408); 0 = off.
    pub min_body_rate: u64,
    pub min_body_rate_grace: Duration,
    /// `body_timeout`: the longest the proxy waits for a whole request body.
    pub body_timeout: Duration,
    /// `max_connections`: open client connections per worker; at the limit
    /// the worker stops accepting and new connections wait in the kernel's
    /// backlog. None = unlimited.
    pub max_connections: Option<usize>,
    /// `workers`: event loops (threads) in this process, 1..=1024. With more
    /// than one, each has its own client listeners (SO_REUSEPORT) and its own
    /// share of the backend connections.
    pub workers: usize,
    /// `cpu_affinity`: pin worker i to the i-th CPU the process may run on.
    pub cpu_affinity: bool,
    /// `reuseport`: SO_REUSEPORT on every listener, so that separately
    /// started processes can share ports.
    pub reuseport: bool,
    /// `splice`: relay large Content-Length response bodies backend → pipe →
    /// client with splice(2) instead of copying them (default true).
    pub splice: bool,
    /// `access_log`: a file path, or `stderr`; one line per request
    /// (`access_log.rs`). Off by default.
    pub access_log: Option<String>,
    /// `status_uri`: the path the proxy answers itself with metrics
    /// (Prometheus text) or the HTML status page. Off by default.
    pub status_uri: Option<String>,
    /// `shutdown_timeout`: on SIGTERM/SIGINT, how long requests in flight
    /// may take to finish before their connections are closed.
    pub shutdown_timeout: Duration,
    pub sections: Vec<SectionConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SslListener {
    pub at: String,
    pub certfile: PathBuf,
    pub keyfile: PathBuf,
}

/// One `map` entry after the `defaults` merge.
#[derive(Debug, Clone, PartialEq)]
pub struct SectionConfig {
    /// Host names, lower-cased, without port.
    pub incoming: Vec<String>,
    /// Where this section's backends connect. Port 0 = any free port.
    pub outgoing: Vec<SocketAddr>,
    pub default: bool,
    /// Handshake key; empty = none (backends send length `00`).
    pub key: String,
    pub docroot: Option<PathBuf>,
    pub sendfileroot: Option<PathBuf>,
    pub enable_sendfile_404: bool,
    pub xforwardedfor: bool,
    pub redeployable: bool,
    pub redeployment_sizelimit: usize,
    pub staticmask: Option<String>,
    pub cache_directory: Option<String>,
    pub cache_extensions: Vec<String>,
}

#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and parses the YAML file at `path`. Errors name the path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        Config::from_yaml_str(&text, &path.display().to_string())
    }

    /// Parses, merges `defaults` and validates `text`; `origin` (usually the
    /// file name) prefixes every error message.
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw = parse::parse_raw(text, origin)?;
        merge::build(raw, origin)
    }

    /// What runs with no config file (see `builtin.rs`).
    pub fn builtin_default() -> Config {
        builtin::config()
    }

    /// Every client listener address: each `cluster_address` crossed with
    /// each `cluster_port`. An address may be an IPv4/IPv6 literal (IPv6 with
    /// or without brackets) or a host name, which is resolved (first IPv4
    /// address preferred).
    pub fn client_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out = Vec::new();
        for a in &self.cluster_address {
            for p in &self.cluster_port {
                out.push(
                    addresses::resolve_host_port(a, *p)
                        .map_err(|e| ConfigError(format!("cluster_address `{a}`: {e}")))?,
                );
            }
        }
        Ok(out)
    }

    /// Fully validates a `Config` built or changed in code (for example
    /// after command-line overrides), with the same rules and messages as
    /// loading a file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Config::from_yaml_str(&self.to_yaml(), "config").map(|_| ())
    }

    /// The normalized configuration as YAML, using the original key names
    /// (durations as float seconds). `from_yaml_str(&cfg.to_yaml(), ..)`
    /// gives back an equal `Config`.
    pub fn to_yaml(&self) -> String {
        output::to_yaml(self)
    }
}
