//! Raw to `Config`: applies the built-in defaults, merges the file's
//! `defaults` into each `map` entry, and checks each value on its own.
//!
//! Invariants: in the merge a `map` entry's own value always wins over
//! `defaults`, key by key (never merged inside a list); the top-level
//! `logger` wins over `defaults.logger`; every error starts with the origin
//! (and, for a section, `map[i] (first incoming name)`) and says what to
//! write instead. Rules that span several keys or sections run last, in
//! `cross_checks.rs`.

use std::path::PathBuf;
use std::time::Duration;

use super::addresses::{check_incoming, parse_outgoing};
use super::builtin::{
    default_cache_extensions, DEFAULT_BACKEND_TIMEOUT_S, DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_HANDSHAKE_TIMEOUT_S, DEFAULT_HEADER_TIMEOUT_S, DEFAULT_HEALTH_URI,
    DEFAULT_KEEPALIVE_TIMEOUT_S, DEFAULT_LOG_LEVEL, DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MIN_BODY_RATE, DEFAULT_MIN_BODY_RATE_GRACE_S, DEFAULT_REDEPLOYMENT_SIZELIMIT,
    DEFAULT_REQUEST_BUFFER, DEFAULT_REQUEST_SPOOL_LIMIT, DEFAULT_SHUTDOWN_TIMEOUT_S,
    DEFAULT_TIMEOUT_S, DEFAULT_WORKERS, MAX_KEY_BYTES, MAX_MAX_CONNECTIONS, MAX_MAX_HEADER_BYTES,
    MAX_REDEPLOYMENT_SIZELIMIT, MAX_REQUEST_BUFFER, MIN_MAX_HEADER_BYTES,
};
use super::cross_checks;
use super::legacy::{logger_legacy, note_legacy, section_legacy, top_legacy};
use super::raw::{Flag, PortList, RawSection, RawTop, Secs, StrList};
use super::{Config, ConfigError, SectionConfig, SslListener};

/// The entry's own value if it has one, else the one from `defaults`.
fn pick<T: Clone>(own: &Option<T>, def: &Option<T>) -> Option<T> {
    own.clone().or_else(|| def.clone())
}

/// A duration key's value, or its default in whole seconds.
fn seconds_or(value: Option<Secs>, default_s: u64) -> Duration {
    value.map_or(Duration::from_secs(default_s), |s| s.0)
}

/// How a section is named in messages: `map[1] (api.example.com)`.
fn section_label(index: usize, raw: &RawSection) -> String {
    match raw.incoming.as_ref().and_then(|l| l.0.first()) {
        Some(name) => format!("map[{index}] ({name})"),
        None => format!("map[{index}]"),
    }
}

/// One `map` entry: its own value for each key, else the one in `defaults`,
/// else the built-in default.
fn build_section(
    origin: &str,
    index: usize,
    own: &RawSection,
    defaults: &RawSection,
) -> Result<SectionConfig, ConfigError> {
    let place = section_label(index, own);
    let err = |msg: String| ConfigError(format!("{origin}: {place}: {msg}"));
    section_legacy(origin, &place, own)?;
    if own.logger.is_some() {
        note_legacy(
            origin,
            &format!("{place}: "),
            "logger",
            "per-section loggers are not supported; the top-level logger is used",
        );
    }

    let incoming_raw = pick(&own.incoming, &defaults.incoming)
        .map(|l| l.0)
        .unwrap_or_default();
    if incoming_raw.is_empty() {
        return Err(err(
            "`incoming` is missing or empty; list the host names this section serves, \
             e.g. `incoming: [example.com, www.example.com]`"
                .into(),
        ));
    }
    let mut incoming = Vec::with_capacity(incoming_raw.len());
    for name in &incoming_raw {
        incoming.push(check_incoming(name).map_err(&err)?);
    }

    let docroot = pick(&own.docroot, &defaults.docroot);
    let outgoing_raw = pick(&own.outgoing, &defaults.outgoing)
        .map(|l| l.0)
        .unwrap_or_default();
    if outgoing_raw.is_empty() && docroot.is_none() {
        return Err(err(
            "`outgoing` is missing; give the host:port where this section's backends \
             connect (e.g. `outgoing: 127.0.0.1:30000`), or a `docroot` for a \
             static-only section"
                .into(),
        ));
    }
    let mut outgoing = Vec::with_capacity(outgoing_raw.len());
    for s in &outgoing_raw {
        outgoing.push(parse_outgoing(s).map_err(|e| err(format!("`outgoing`: {e}")))?);
    }

    let key = pick(&own.key, &defaults.key)
        .map(|k| k.0)
        .unwrap_or_default();
    if key.len() > MAX_KEY_BYTES {
        return Err(err(format!(
            "`key` is {} bytes long; the most allowed is {MAX_KEY_BYTES} bytes (the \
             handshake sends its length as two hex digits)",
            key.len()
        )));
    }

    let limit = pick(
        &own.redeployment_sizelimit,
        &defaults.redeployment_sizelimit,
    )
    .unwrap_or(DEFAULT_REDEPLOYMENT_SIZELIMIT as u64);
    if limit > MAX_REDEPLOYMENT_SIZELIMIT {
        return Err(err(format!(
            "`redeployment_sizelimit: {limit}` is too large; the most allowed is \
             {MAX_REDEPLOYMENT_SIZELIMIT} bytes, because a request is replayed to another \
             backend from the one connection buffer that holds it, so the whole request \
             must fit in that buffer"
        )));
    }

    let flag = |o: &Option<Flag>, d: &Option<Flag>| pick(o, d).map(|f| f.0).unwrap_or(false);
    let non_empty = |name: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
        match v {
            Some(s) if s.is_empty() => Err(err(format!(
                "`{name}` is empty; remove the key or give a value"
            ))),
            v => Ok(v),
        }
    };
    let non_empty_path = |name: &str, v: Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
        match v {
            Some(p) if p.as_os_str().is_empty() => Err(err(format!(
                "`{name}` is empty; remove the key or give a directory"
            ))),
            v => Ok(v),
        }
    };

    Ok(SectionConfig {
        incoming,
        outgoing,
        default: flag(&own.default, &defaults.default),
        key,
        docroot: non_empty_path("docroot", docroot)?,
        sendfileroot: non_empty_path(
            "sendfileroot",
            pick(&own.sendfileroot, &defaults.sendfileroot),
        )?,
        enable_sendfile_404: flag(&own.enable_sendfile_404, &defaults.enable_sendfile_404),
        xforwardedfor: flag(&own.xforwardedfor, &defaults.xforwardedfor),
        redeployable: flag(&own.redeployable, &defaults.redeployable),
        redeployment_sizelimit: limit as usize,
        staticmask: non_empty("staticmask", pick(&own.staticmask, &defaults.staticmask))?,
        cache_directory: non_empty(
            "cache_directory",
            pick(&own.cache_directory, &defaults.cache_directory),
        )?,
        cache_extensions: pick(&own.cache_extensions, &defaults.cache_extensions)
            .map(|l| l.0)
            .unwrap_or_else(default_cache_extensions),
    })
}

/// Turns the raw file into a `Config`: built-in defaults for what is left
/// out, `defaults` merged into each `map` entry, every value checked, then
/// the rules that span several keys (`cross_checks.rs`).
pub(super) fn build(raw: RawTop, origin: &str) -> Result<Config, ConfigError> {
    let err = |msg: String| ConfigError(format!("{origin}: {msg}"));
    top_legacy(origin, &raw);

    let cluster_address = match raw.cluster_address {
        None => {
            return Err(err(
                "cluster_address is required: the address(es) clients connect to, \
                 e.g. `cluster_address: 127.0.0.1` (or 0.0.0.0 for all interfaces)"
                    .into(),
            ))
        }
        Some(StrList(v)) if v.is_empty() => {
            return Err(err(
                "cluster_address is an empty list; give at least one address".into(),
            ))
        }
        Some(StrList(v)) => v,
    };
    let cluster_port = match raw.cluster_port {
        None => {
            return Err(err(
                "cluster_port is required: the port(s) clients connect to, \
                 e.g. `cluster_port: 8080`"
                    .into(),
            ))
        }
        Some(PortList(v)) if v.is_empty() => {
            return Err(err(
                "cluster_port is an empty list; give at least one port".into()
            ))
        }
        Some(PortList(v)) => v,
    };

    let health_check_uri = raw
        .health_check_uri
        .unwrap_or_else(|| DEFAULT_HEALTH_URI.to_owned());
    if !health_check_uri.starts_with('/') || health_check_uri.contains(char::is_whitespace) {
        return Err(err(format!(
            "health_check_uri `{health_check_uri}` must be a path starting with '/' and \
             without spaces, e.g. {DEFAULT_HEALTH_URI}"
        )));
    }

    let status_uri = raw.status_uri;
    if let Some(u) = &status_uri {
        if !u.starts_with('/') || u.contains(char::is_whitespace) || u.contains('?') {
            return Err(err(format!(
                "status_uri `{u}` must be a path starting with '/', without spaces or a \
                 query, e.g. /swiftiply-status"
            )));
        }
        if *u == health_check_uri {
            return Err(err(format!(
                "status_uri `{u}` is also the health_check_uri; give them different paths"
            )));
        }
    }
    if matches!(&raw.access_log, Some(a) if a.trim().is_empty()) {
        return Err(err(
            "`access_log` is empty; remove it, or give a file path or `stderr`".into(),
        ));
    }

    for (name, v) in [("user", &raw.user), ("group", &raw.group)] {
        if matches!(v, Some(s) if s.trim().is_empty()) {
            return Err(err(format!(
                "`{name}` is empty; remove it or name the {name} to run as"
            )));
        }
    }
    if matches!(&raw.pidfile, Some(p) if p.as_os_str().is_empty()) {
        return Err(err("`pidfile` is empty; remove it or give a path".into()));
    }

    let max_header_bytes = raw
        .max_header_bytes
        .unwrap_or(DEFAULT_MAX_HEADER_BYTES as u64);
    if !(MIN_MAX_HEADER_BYTES..=MAX_MAX_HEADER_BYTES).contains(&max_header_bytes) {
        return Err(err(format!(
            "max_header_bytes: {max_header_bytes} is out of range; give a value from \
             {MIN_MAX_HEADER_BYTES} to {MAX_MAX_HEADER_BYTES} bytes (default \
             {DEFAULT_MAX_HEADER_BYTES})"
        )));
    }

    let request_buffer = raw.request_buffer.unwrap_or(DEFAULT_REQUEST_BUFFER as u64);
    if request_buffer > MAX_REQUEST_BUFFER {
        return Err(err(format!(
            "request_buffer: {request_buffer} is out of range; give at most \
             {MAX_REQUEST_BUFFER} bytes (default {DEFAULT_REQUEST_BUFFER}): every pooled \
             buffer is this large"
        )));
    }
    if let Some(dir) = &raw.request_spool_directory {
        if dir.as_os_str().is_empty() {
            return Err(err(
                "request_spool_directory is empty; remove it (the system's temp directory \
                 is used) or give a directory"
                    .into(),
            ));
        }
    }
    if raw.body_timeout.is_some_and(|t| t.0.is_zero()) {
        return Err(err(
            "body_timeout: 0 would refuse every request body; give seconds (default 300)".into(),
        ));
    }

    if let Some(n) = raw.max_connections {
        if !(1..=MAX_MAX_CONNECTIONS).contains(&n) {
            return Err(err(format!(
                "max_connections: {n} is out of range; give the most client connections \
                 one worker keeps open, from 1 to {MAX_MAX_CONNECTIONS}, or leave the key \
                 out for no limit"
            )));
        }
    }

    // Logger: the top-level one, else `defaults.logger`.
    let defaults = raw.defaults.unwrap_or_default();
    section_legacy(origin, "defaults", &defaults)?;
    let logger = raw.logger.or_else(|| defaults.logger.clone());
    let mut log_level = DEFAULT_LOG_LEVEL;
    if let Some(lg) = &logger {
        match (lg.log_level, lg.level) {
            (Some(a), Some(b)) if a.0 != b.0 => {
                return Err(err(
                    "logger: give either `log_level` or `level`, not both".into()
                ))
            }
            (Some(l), _) | (None, Some(l)) => log_level = l.0,
            (None, None) => {}
        }
        logger_legacy(origin, lg);
    }

    let mut ssl = Vec::new();
    for (i, s) in raw.ssl.unwrap_or_default().into_iter().enumerate() {
        if s.certfile.as_os_str().is_empty() || s.keyfile.as_os_str().is_empty() {
            return Err(err(format!(
                "ssl[{i}] (at {}): `certfile` and `keyfile` must be paths",
                s.at
            )));
        }
        ssl.push(SslListener {
            at: s.at,
            certfile: s.certfile,
            keyfile: s.keyfile,
        });
    }

    let raw_sections = match raw.map {
        Some(m) if !m.is_empty() => m,
        _ => {
            return Err(err(
                "map: no sections; add at least one `map` entry with `incoming` and `outgoing`"
                    .into(),
            ))
        }
    };
    let mut sections = Vec::with_capacity(raw_sections.len());
    for (i, rs) in raw_sections.iter().enumerate() {
        sections.push(build_section(origin, i, rs, &defaults)?);
    }

    let cfg = Config {
        cluster_address,
        cluster_port,
        daemonize: raw.daemonize.map(|f| f.0).unwrap_or(false),
        pidfile: raw.pidfile,
        user: raw.user,
        group: raw.group,
        timeout: seconds_or(raw.timeout, DEFAULT_TIMEOUT_S),
        health_check_uri,
        ssl,
        log_level,
        header_timeout: seconds_or(raw.header_timeout, DEFAULT_HEADER_TIMEOUT_S),
        keepalive_timeout: seconds_or(raw.keepalive_timeout, DEFAULT_KEEPALIVE_TIMEOUT_S),
        backend_timeout: seconds_or(raw.backend_timeout, DEFAULT_BACKEND_TIMEOUT_S),
        handshake_timeout: seconds_or(raw.handshake_timeout, DEFAULT_HANDSHAKE_TIMEOUT_S),
        max_header_bytes: max_header_bytes as usize,
        max_body_bytes: raw.max_body_bytes,
        request_buffer: request_buffer as usize,
        request_spool_directory: raw.request_spool_directory,
        request_spool_limit: raw
            .request_spool_limit
            .unwrap_or(DEFAULT_REQUEST_SPOOL_LIMIT),
        min_body_rate: raw.min_body_rate.unwrap_or(DEFAULT_MIN_BODY_RATE),
        min_body_rate_grace: seconds_or(raw.min_body_rate_grace, DEFAULT_MIN_BODY_RATE_GRACE_S),
        body_timeout: seconds_or(raw.body_timeout, DEFAULT_BODY_TIMEOUT_S),
        max_connections: raw.max_connections.map(|n| n as usize),
        workers: raw.workers.map_or(DEFAULT_WORKERS, |w| w.0),
        cpu_affinity: raw.cpu_affinity.is_some_and(|f| f.0),
        reuseport: raw.reuseport.is_some_and(|f| f.0),
        splice: raw.splice.is_none_or(|f| f.0),
        access_log: raw.access_log,
        status_uri,
        shutdown_timeout: seconds_or(raw.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT_S),
        sections,
    };
    cross_checks::check(&cfg).map_err(err)?;
    Ok(cfg)
}
