//! Text to `RawTop`: runs serde_yaml over the file and turns its errors into
//! messages a person can act on.
//!
//! Invariants: every error starts with `origin` (usually the file name);
//! unknown keys keep serde_yaml's line and column and gain a hint when the
//! key is a common guess or sits at the wrong level; an empty file (only
//! comments or document markers) says which keys are needed. YAML merge keys
//! (`<<: *anchor`) are applied before the typed read.

use serde::Deserialize;

use super::raw::RawTop;
use super::ConfigError;

// The keys of the current format, for the "wrong level" hints below. They
// are the non-legacy fields of `RawTop` and `RawSection`; keep them in step.
const TOP_KEYS: &[&str] = &[
    "cluster_address",
    "cluster_port",
    "daemonize",
    "pidfile",
    "user",
    "group",
    "timeout",
    "health_check_uri",
    "ssl",
    "logger",
    "defaults",
    "map",
    "header_timeout",
    "keepalive_timeout",
    "backend_timeout",
    "handshake_timeout",
    "max_header_bytes",
    "max_body_bytes",
    "request_buffer",
    "request_spool_directory",
    "request_spool_limit",
    "min_body_rate",
    "min_body_rate_grace",
    "body_timeout",
    "max_connections",
    "workers",
    "cpu_affinity",
    "reuseport",
    "splice",
    "access_log",
    "status_uri",
    "shutdown_timeout",
];

const SECTION_KEYS: &[&str] = &[
    "incoming",
    "outgoing",
    "default",
    "key",
    "docroot",
    "sendfileroot",
    "enable_sendfile_404",
    "xforwardedfor",
    "redeployable",
    "redeployment_sizelimit",
    "staticmask",
    "cache_directory",
    "cache_extensions",
];

/// A hint for an unknown key: names people often guess, and keys written at
/// the wrong level.
fn unknown_key_hint(key: &str, in_section: bool) -> Option<String> {
    let fixed = match key {
        "static_mask" => Some("the key is spelled `staticmask`"),
        "certs" | "tls" => Some("TLS listeners are configured with `ssl`"),
        "healthcheck" | "health_check" => Some("the key is `health_check_uri`"),
        "filter" | "match" | "prefix" => {
            Some("routing by URI is not supported; sections are chosen by `incoming` host name")
        }
        "static" | "static_root" | "root" => Some("static files are served from `docroot`"),
        "log_level" | "level" => Some("write it inside `logger`, e.g. `logger: {log_level: 2}`"),
        "servers" | "directory" | "caching" | "groups" => {
            Some("this belongs to the classic traditional proxy mode, which is not supported")
        }
        "threads" | "worker_processes" | "processes" | "nbthread" => {
            Some("the number of event loops is `workers`")
        }
        "reuse_port" | "so_reuseport" => Some("the key is spelled `reuseport`"),
        "affinity" | "cpu_pinning" | "pin_cpus" => Some("the key is `cpu_affinity`"),
        "maxconn" | "max_conns" | "max_clients" | "worker_connections" | "connection_limit" => {
            Some("the limit of open client connections per worker is `max_connections`")
        }
        "backup" | "manager" => Some("this classic key never worked and is not supported"),
        _ => None,
    };
    if let Some(h) = fixed {
        return Some(h.to_owned());
    }
    if in_section && TOP_KEYS.contains(&key) {
        return Some(format!("`{key}` is a top-level key, not a `map` entry key"));
    }
    if !in_section && SECTION_KEYS.contains(&key) {
        return Some(format!(
            "`{key}` is a section key: put it in a `map` entry or in `defaults`"
        ));
    }
    None
}

/// Turns a serde_yaml error into a `ConfigError` prefixed with `origin`,
/// keeping serde_yaml's path and location, and rewording serde's
/// "unknown field" message.
fn yaml_error(origin: &str, e: &serde_yaml::Error) -> ConfigError {
    let full = e.to_string();
    // Strip serde_yaml's own " at line L column C" suffix; we print the
    // location ourselves (serde_yaml omits it for line 1 column 1).
    let msg = match full.rfind(" at line ") {
        Some(i) if e.location().is_some() => &full[..i],
        _ => full.as_str(),
    };
    let loc = e
        .location()
        .map(|l| format!(" at line {} column {}", l.line(), l.column()))
        .unwrap_or_default();
    // serde reports duplicate and missing keys at the start of the mapping.
    let in_mapping = e
        .location()
        .map(|l| {
            format!(
                " (in the mapping that starts at line {} column {})",
                l.line(),
                l.column()
            )
        })
        .unwrap_or_default();
    // "path: message" when the error is below the top level.
    let (path, body) = match msg.find(": ") {
        Some(i) if !msg[..i].contains(|c: char| c.is_whitespace() || c == '`') => {
            (&msg[..i], &msg[i + 2..])
        }
        _ => ("", msg),
    };
    let path_prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    };
    let in_section = path.starts_with("map") || path.starts_with("defaults");
    if let Some(rest) = body.strip_prefix("unknown field `") {
        if let Some(end) = rest.find('`') {
            let key = &rest[..end];
            let expected = rest[end + 1..].trim_start_matches(',').trim();
            let mut out = format!("{origin}: {path_prefix}unknown key `{key}`{loc} ({expected})");
            if let Some(h) = unknown_key_hint(key, in_section) {
                out.push_str("; ");
                out.push_str(&h);
            }
            return ConfigError(out);
        }
    }
    if let Some(rest) = body.strip_prefix("duplicate field `") {
        if let Some(end) = rest.find('`') {
            let key = &rest[..end];
            return ConfigError(format!(
                "{origin}: {path_prefix}key `{key}` is given twice{in_mapping}; keep one"
            ));
        }
    }
    if let Some(rest) = body.strip_prefix("missing field `") {
        if let Some(end) = rest.find('`') {
            let key = &rest[..end];
            return ConfigError(format!(
                "{origin}: {path_prefix}key `{key}` is missing{in_mapping}"
            ));
        }
    }
    if body.contains("more than one document") {
        return ConfigError(format!(
            "{origin}: the file holds more than one YAML document (a second `---` line); \
             put the whole config in one document"
        ));
    }
    ConfigError(format!("{origin}: {path_prefix}{body}{loc}"))
}

/// Reads `text` into the raw structs, or says why it cannot, prefixed with
/// `origin`.
pub(super) fn parse_raw(text: &str, origin: &str) -> Result<RawTop, ConfigError> {
    let empty = || {
        ConfigError(format!(
            "{origin}: the config is empty; it needs at least `cluster_address`, \
             `cluster_port` and a `map` of sections"
        ))
    };
    if text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    }) {
        return Err(empty());
    }
    // YAML merge keys (`<<: *anchor`), which the classic program's YAML
    // parser understood, need a detour through `Value` (losing line numbers).
    let raw: Option<RawTop> = if text.contains("<<") {
        let mut v: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| yaml_error(origin, &e))?;
        v.apply_merge().map_err(|e| yaml_error(origin, &e))?;
        Option::<RawTop>::deserialize(v).map_err(|e| yaml_error(origin, &e))?
    } else {
        serde_yaml::from_str(text).map_err(|e| yaml_error(origin, &e))?
    };
    raw.ok_or_else(empty)
}
