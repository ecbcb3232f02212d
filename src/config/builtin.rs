//! Built-in values: what a key means when it is left out, the hard limits a
//! value must stay within, and the whole configuration used when there is no
//! config file at all.
//!
//! (Not to be confused with the `defaults:` key of the file, which an
//! operator writes and which is merged into each `map` entry in `merge.rs`.)
//!
//! Invariant: `config()` holds exactly the values a minimal file gets from
//! the `DEFAULT_*` constants here, and passes `Config::validate`; the test
//! `builtin_default_is_valid` checks both.

use std::time::Duration;

use super::{Config, SectionConfig};

pub(super) const DEFAULT_TIMEOUT_S: u64 = 3;
pub(super) const DEFAULT_HEADER_TIMEOUT_S: u64 = 10;
pub(super) const DEFAULT_KEEPALIVE_TIMEOUT_S: u64 = 30;
pub(super) const DEFAULT_BACKEND_TIMEOUT_S: u64 = 60;
/// `shutdown_timeout`: requests in flight get this long after SIGTERM.
pub(super) const DEFAULT_SHUTDOWN_TIMEOUT_S: u64 = 30;
pub(super) const DEFAULT_HANDSHAKE_TIMEOUT_S: u64 = 5;
pub(super) const DEFAULT_HEALTH_URI: &str = "/swiftiply_health";
pub(super) const DEFAULT_LOG_LEVEL: u8 = 2;
pub(super) const DEFAULT_MAX_HEADER_BYTES: usize = 16384;
/// `request_buffer`: a body this small is read whole before a backend is
/// taken. 8 KiB holds the form posts and JSON calls most sites receive,
/// and fits the pooled 16 KiB buffer beside a head of up to 8 KiB, so it
/// costs no memory beyond what a request already holds.
pub(super) const DEFAULT_REQUEST_BUFFER: usize = 8192;
/// Largest `request_buffer`: every pooled buffer grows with it.
pub(super) const MAX_REQUEST_BUFFER: u64 = 1 << 20;
/// `request_spool_limit`: bytes of spooled bodies one worker keeps on disk.
pub(super) const DEFAULT_REQUEST_SPOOL_LIMIT: u64 = 256 << 20;
/// `min_body_rate` (bytes per second) and its grace period: Kestrel's
/// idea, with a floor a real upload on a poor mobile link still clears.
pub(super) const DEFAULT_MIN_BODY_RATE: u64 = 1024;
pub(super) const DEFAULT_MIN_BODY_RATE_GRACE_S: u64 = 5;
/// `body_timeout`: the longest a request body may take to arrive.
pub(super) const DEFAULT_BODY_TIMEOUT_S: u64 = 300;
pub(super) const MIN_MAX_HEADER_BYTES: u64 = 1024;
pub(super) const MAX_MAX_HEADER_BYTES: u64 = 1_048_576;
/// `max_connections` beyond this is a typo: no worker holds ten million
/// client connections.
pub(super) const MAX_MAX_CONNECTIONS: u64 = 10_000_000;
pub(super) const DEFAULT_REDEPLOYMENT_SIZELIMIT: usize = 16384;
/// A redeployable request is replayed from the single connection buffer that
/// holds it, so it can be no larger than that buffer.
pub(super) const MAX_REDEPLOYMENT_SIZELIMIT: u64 = 1_048_576;
/// The handshake sends the key length as two hex digits.
pub(super) const MAX_KEY_BYTES: usize = 255;
pub(super) const DEFAULT_WORKERS: usize = 1;
/// More event loops than this is a typo, not a machine.
pub(super) const MAX_WORKERS: usize = 1024;
/// Durations are kept to the microsecond; this bound keeps that exact when
/// printed as float seconds and read back.
pub(super) const MAX_DURATION_S: f64 = 1e9;

pub(super) fn default_cache_extensions() -> Vec<String> {
    vec!["html".into()]
}

/// What runs with no config file: clients on 127.0.0.1:8080, one default
/// section for `localhost` whose backends connect to 127.0.0.1:30000.
pub(super) fn config() -> Config {
    Config {
        cluster_address: vec!["127.0.0.1".into()],
        cluster_port: vec![8080],
        daemonize: false,
        pidfile: None,
        user: None,
        group: None,
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_S),
        health_check_uri: DEFAULT_HEALTH_URI.into(),
        ssl: Vec::new(),
        log_level: DEFAULT_LOG_LEVEL,
        header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_S),
        keepalive_timeout: Duration::from_secs(DEFAULT_KEEPALIVE_TIMEOUT_S),
        backend_timeout: Duration::from_secs(DEFAULT_BACKEND_TIMEOUT_S),
        handshake_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_S),
        max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
        max_body_bytes: None,
        request_buffer: DEFAULT_REQUEST_BUFFER,
        request_spool_directory: None,
        request_spool_limit: DEFAULT_REQUEST_SPOOL_LIMIT,
        min_body_rate: DEFAULT_MIN_BODY_RATE,
        min_body_rate_grace: Duration::from_secs(DEFAULT_MIN_BODY_RATE_GRACE_S),
        body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_S),
        max_connections: None,
        workers: DEFAULT_WORKERS,
        cpu_affinity: false,
        reuseport: false,
        splice: true,
        access_log: None,
        status_uri: None,
        shutdown_timeout: Duration::from_secs(DEFAULT_SHUTDOWN_TIMEOUT_S),
        sections: vec![SectionConfig {
            incoming: vec!["localhost".into()],
            // A literal socket address always parses.
            outgoing: vec!["127.0.0.1:30000".parse().unwrap()],
            default: true,
            key: String::new(),
            docroot: None,
            sendfileroot: None,
            enable_sendfile_404: false,
            xforwardedfor: false,
            redeployable: false,
            redeployment_sizelimit: DEFAULT_REDEPLOYMENT_SIZELIMIT,
            staticmask: None,
            cache_directory: None,
            cache_extensions: default_cache_extensions(),
        }],
    }
}
