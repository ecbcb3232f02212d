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
//! How it works: the text is deserialized straight into private `Raw*`
//! structs (`deny_unknown_fields`, lenient scalar types with their own
//! visitors) so serde_yaml can name an unknown key or bad value with its line
//! and column; `build` then applies defaults, merges `defaults` into each
//! `map` entry (the entry's own value wins), and validates. Classic keys that
//! no longer mean anything are accepted and logged at info level. See
//! `config/example.yml` for every key with comments.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_yaml::{Mapping, Value};

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

// ---------------------------------------------------------------------------
// Defaults and limits
// ---------------------------------------------------------------------------

const DEFAULT_TIMEOUT_S: u64 = 3;
const DEFAULT_HEADER_TIMEOUT_S: u64 = 10;
const DEFAULT_KEEPALIVE_TIMEOUT_S: u64 = 30;
const DEFAULT_BACKEND_TIMEOUT_S: u64 = 60;
const DEFAULT_HANDSHAKE_TIMEOUT_S: u64 = 5;
const DEFAULT_HEALTH_URI: &str = "/swiftiply_health";
const DEFAULT_LOG_LEVEL: u8 = 2;
const DEFAULT_MAX_HEADER_BYTES: usize = 16384;
const MIN_MAX_HEADER_BYTES: u64 = 1024;
const MAX_MAX_HEADER_BYTES: u64 = 1_048_576;
const DEFAULT_REDEPLOYMENT_SIZELIMIT: usize = 16384;
/// A redeployable request is replayed from the single connection buffer that
/// holds it, so it can be no larger than that buffer.
const MAX_REDEPLOYMENT_SIZELIMIT: u64 = 1_048_576;
/// The handshake sends the key length as two hex digits.
const MAX_KEY_BYTES: usize = 255;
/// Durations are kept to the microsecond; this bound keeps that exact when
/// printed as float seconds and read back.
const MAX_DURATION_S: f64 = 1e9;

fn default_cache_extensions() -> Vec<String> {
    vec!["html".into()]
}

// ---------------------------------------------------------------------------
// Raw (as written) structures
// ---------------------------------------------------------------------------

/// The file as written. Every key is optional here; `build` decides what is
/// required. Legacy keys are accepted so classic configs keep loading.
#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of config keys (cluster_address, cluster_port, map, ...)"
)]
struct RawTop {
    cluster_address: Option<StrList>,
    cluster_port: Option<PortList>,
    daemonize: Option<Flag>,
    pidfile: Option<PathBuf>,
    user: Option<String>,
    group: Option<String>,
    timeout: Option<Secs>,
    health_check_uri: Option<String>,
    ssl: Option<Vec<RawSsl>>,
    logger: Option<RawLogger>,
    defaults: Option<RawSection>,
    map: Option<Vec<RawSection>>,
    header_timeout: Option<Secs>,
    keepalive_timeout: Option<Secs>,
    backend_timeout: Option<Secs>,
    handshake_timeout: Option<Secs>,
    max_header_bytes: Option<u64>,
    max_body_bytes: Option<u64>,
    // Legacy keys: accepted, ignored with an info line.
    epoll: Option<IgnoredAny>,
    kqueue: Option<IgnoredAny>,
    epoll_descriptors: Option<IgnoredAny>,
    descriptors: Option<IgnoredAny>,
    chunked_encoding_threshold: Option<IgnoredAny>,
    cache_threshold: Option<IgnoredAny>,
    backend_address: Option<IgnoredAny>,
    backend_port: Option<IgnoredAny>,
    updates: Option<IgnoredAny>,
}

/// One `map` entry (or `defaults`) as written.
#[derive(Deserialize, Default, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of section keys (incoming, outgoing, default, ...)"
)]
struct RawSection {
    incoming: Option<StrList>,
    outgoing: Option<StrList>,
    default: Option<Flag>,
    key: Option<KeyText>,
    docroot: Option<PathBuf>,
    sendfileroot: Option<PathBuf>,
    enable_sendfile_404: Option<Flag>,
    xforwardedfor: Option<Flag>,
    redeployable: Option<Flag>,
    redeployment_sizelimit: Option<u64>,
    staticmask: Option<String>,
    cache_directory: Option<String>,
    cache_extensions: Option<StrList>,
    // Legacy keys: accepted, ignored with an info line (`proxy` and
    // `keepalive` are checked: the traditional mode is not supported).
    keepalive: Option<Flag>,
    file_cache: Option<IgnoredAny>,
    etag_cache: Option<IgnoredAny>,
    dynamic_request_cache: Option<IgnoredAny>,
    logger: Option<RawLogger>,
    proxy: Option<String>,
    url: Option<IgnoredAny>,
}

#[derive(Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `type` and `log_level` (or `level`)"
)]
struct RawLogger {
    #[serde(rename = "type")]
    kind: Option<String>,
    log_level: Option<Level>,
    level: Option<Level>,
    // Analogger parameters of the classic program: accepted, unused.
    service: Option<IgnoredAny>,
    host: Option<IgnoredAny>,
    port: Option<IgnoredAny>,
    key: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `at`, `certfile` and `keyfile`"
)]
struct RawSsl {
    at: String,
    certfile: PathBuf,
    keyfile: PathBuf,
}

// ---------------------------------------------------------------------------
// Lenient scalar types. Each uses a visitor (not an untagged enum) so that
// serde_yaml can attach the line and column to its errors.
// ---------------------------------------------------------------------------

/// A string or a list of strings.
#[derive(Clone, Debug)]
struct StrList(Vec<String>);

impl<'de> Deserialize<'de> for StrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrList, E> {
                Ok(StrList(vec![v.to_owned()]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrList, E> {
                Ok(StrList(vec![v.to_string()]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrList, E> {
                Ok(StrList(vec![v.to_string()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(StrList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A TCP port: an integer 0..=65535 (or the same as a string).
#[derive(Clone, Copy, Debug)]
struct Port(u16);

struct PortVisitor;

impl PortVisitor {
    fn port<E: de::Error>(v: u64) -> Result<u16, E> {
        u16::try_from(v).map_err(|_| {
            E::custom(format_args!(
                "port {v} is out of range; a port is 0..=65535 (0 = any free port)"
            ))
        })
    }
}

impl<'de> Visitor<'de> for PortVisitor {
    type Value = Port;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a port number 0..=65535")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
        Self::port(v).map(Port)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
        match v.trim().parse::<u64>() {
            Ok(n) => self.visit_u64(n),
            Err(_) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PortVisitor)
    }
}

/// A port or a list of ports.
#[derive(Clone, Debug)]
struct PortList(Vec<u16>);

impl<'de> Deserialize<'de> for PortList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PortList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a port number or a list of port numbers")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortList, E> {
                PortVisitor.visit_u64(v).map(|p| PortList(vec![p.0]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortList, E> {
                PortVisitor.visit_i64(v).map(|p| PortList(vec![p.0]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortList, E> {
                PortVisitor.visit_str(v).map(|p| PortList(vec![p.0]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PortList, A::Error> {
                let mut out = Vec::new();
                while let Some(p) = seq.next_element::<Port>()? {
                    out.push(p.0);
                }
                Ok(PortList(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean: a YAML bool, or one of the strings true/false, yes/no, on/off,
/// y/n, 1/0 (any case), or the integers 1/0. Classic test configs write
/// `redeployable: 'true'`.
#[derive(Clone, Copy, Debug)]
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Flag;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("true or false (also \"yes\"/\"no\", \"on\"/\"off\")")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Flag, E> {
                Ok(Flag(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Flag, E> {
                match v {
                    0 => Ok(Flag(false)),
                    1 => Ok(Flag(true)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Flag, E> {
                match v {
                    0 => Ok(Flag(false)),
                    1 => Ok(Flag(true)),
                    _ => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Flag, E> {
                match v.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "y" | "on" | "1" => Ok(Flag(true)),
                    "false" | "no" | "n" | "off" | "0" => Ok(Flag(false)),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration given as an integer or float number of seconds; > 0, finite,
/// at most `MAX_DURATION_S`, kept to the microsecond.
#[derive(Clone, Copy, Debug)]
struct Secs(Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number of seconds (integer or decimal, greater than 0)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                if v == 0 {
                    return Err(E::custom("a duration must be greater than 0 seconds"));
                }
                if v as f64 > MAX_DURATION_S {
                    return Err(E::custom(format_args!(
                        "{v} seconds is too long; the most allowed is {MAX_DURATION_S} seconds"
                    )));
                }
                Ok(Secs(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format_args!(
                        "a duration must be greater than 0 seconds, not {v}"
                    ))),
                }
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs, E> {
                if !v.is_finite() {
                    return Err(E::custom(format_args!(
                        "a duration must be a finite number of seconds, not {v}"
                    )));
                }
                if v > MAX_DURATION_S {
                    return Err(E::custom(format_args!(
                        "{v} seconds is too long; the most allowed is {MAX_DURATION_S} seconds"
                    )));
                }
                let micros = (v * 1e6).round();
                if micros < 1.0 {
                    return Err(E::custom(format_args!(
                        "a duration must be greater than 0 seconds (at least 0.000001), not {v}"
                    )));
                }
                Ok(Secs(Duration::from_micros(micros as u64)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A handshake key. Any scalar is taken as written, so `key: 1234` is the
/// string "1234".
#[derive(Clone, Debug)]
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string of at most 255 bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_owned()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        // serde_yaml hands any plain scalar to `visit_str` as written.
        d.deserialize_str(V)
    }
}

/// A log level: 0..=3, or a classic name. A string starting with
/// d/m/n/f (disabled/minimal/normal/full) or containing the digit 0/1/2/3
/// selects that level; any other string means 1, as in the classic program.
#[derive(Clone, Copy, Debug)]
struct Level(u8);

fn level_from_name(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    for (level, initial, digit) in [(0, 'd', '0'), (1, 'm', '1'), (2, 'n', '2'), (3, 'f', '3')] {
        if s.starts_with(initial) || s.contains(digit) {
            return Some(level);
        }
    }
    None
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Level;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a log level: 0..=3 or disabled/minimal/normal/full")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Level, E> {
                if v <= 3 {
                    Ok(Level(v as u8))
                } else {
                    Err(E::invalid_value(de::Unexpected::Unsigned(v), &self))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Level, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Level, E> {
                Ok(Level(level_from_name(v).unwrap_or_else(|| {
                    log::warn!(
                        "log level `{v}` is not one of 0..=3 or disabled/minimal/normal/full; \
                         using 1 (minimal), as the classic program did"
                    );
                    1
                })))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------

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

fn parse_raw(text: &str, origin: &str) -> Result<RawTop, ConfigError> {
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

// ---------------------------------------------------------------------------
// Building and validation
// ---------------------------------------------------------------------------

fn note_legacy(origin: &str, place: &str, key: &str, why: &str) {
    log::info!("{origin}: {place}ignoring legacy key `{key}` ({why})");
}

fn pick<T: Clone>(own: &Option<T>, def: &Option<T>) -> Option<T> {
    own.clone().or_else(|| def.clone())
}

/// How a section is named in messages: `map[1] (api.example.com)`.
fn section_label(index: usize, raw: &RawSection) -> String {
    match raw.incoming.as_ref().and_then(|l| l.0.first()) {
        Some(name) => format!("map[{index}] ({name})"),
        None => format!("map[{index}]"),
    }
}

/// Checks the legacy per-section keys of `raw`, logging those that are
/// ignored. `place` names the entry (`defaults` or a section label).
fn section_legacy(origin: &str, place: &str, raw: &RawSection) -> Result<(), ConfigError> {
    let p = format!("{place}: ");
    if let Some(proxy) = &raw.proxy {
        match proxy.trim().to_ascii_lowercase().as_str() {
            "keepalive" => note_legacy(origin, &p, "proxy", "`keepalive` is the only mode"),
            "traditional" => {
                return Err(ConfigError(format!(
                    "{origin}: {place}: `proxy: traditional` (the classic mode in which \
                     Swiftiply connects out to origin servers) is not supported; remove \
                     `proxy` and have the backends connect to the `outgoing` address"
                )))
            }
            other => {
                return Err(ConfigError(format!(
                    "{origin}: {place}: `proxy: {other}` is not a proxy mode; the only \
                     mode is `keepalive`, so remove the `proxy` key"
                )))
            }
        }
    }
    if let Some(Flag(ka)) = raw.keepalive {
        if ka {
            note_legacy(
                origin,
                &p,
                "keepalive",
                "backends always connect to Swiftiply",
            );
        } else {
            return Err(ConfigError(format!(
                "{origin}: {place}: `keepalive: false` selects the classic traditional proxy \
                 mode, which is not supported; remove `keepalive` and have the backends \
                 connect to the `outgoing` address"
            )));
        }
    }
    let cache_why = "static file caching is managed internally";
    if raw.file_cache.is_some() {
        note_legacy(origin, &p, "file_cache", cache_why);
    }
    if raw.etag_cache.is_some() {
        note_legacy(origin, &p, "etag_cache", cache_why);
    }
    if raw.dynamic_request_cache.is_some() {
        note_legacy(origin, &p, "dynamic_request_cache", cache_why);
    }
    if raw.url.is_some() {
        note_legacy(origin, &p, "url", "it was never used");
    }
    Ok(())
}

fn top_legacy(origin: &str, raw: &RawTop) {
    let items: [(&str, bool, &str); 9] = [
        (
            "epoll",
            raw.epoll.is_some(),
            "the event loop picks epoll/kqueue itself",
        ),
        (
            "kqueue",
            raw.kqueue.is_some(),
            "the event loop picks epoll/kqueue itself",
        ),
        (
            "epoll_descriptors",
            raw.epoll_descriptors.is_some(),
            "the descriptor limit is the process's `ulimit -n`",
        ),
        (
            "descriptors",
            raw.descriptors.is_some(),
            "the descriptor limit is the process's `ulimit -n`",
        ),
        (
            "chunked_encoding_threshold",
            raw.chunked_encoding_threshold.is_some(),
            "static files are always sent with Content-Length",
        ),
        (
            "cache_threshold",
            raw.cache_threshold.is_some(),
            "static file caching is managed internally",
        ),
        (
            "backend_address",
            raw.backend_address.is_some(),
            "it never worked; add a `map` entry instead",
        ),
        (
            "backend_port",
            raw.backend_port.is_some(),
            "it never worked; add a `map` entry instead",
        ),
        (
            "updates",
            raw.updates.is_some(),
            "the REST updater never worked",
        ),
    ];
    for (key, present, why) in items {
        if present {
            note_legacy(origin, "", key, why);
        }
    }
}

/// Resolves `host` (IP literal, bracketed IPv6, or a name) with `port`;
/// a name resolves to its first IPv4 address if it has one.
fn resolve_host_port(host: &str, port: u16) -> Result<SocketAddr, String> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if bare.is_empty() || bare.contains(char::is_whitespace) || bare.contains(':') {
        return Err(format!(
            "`{host}` is not an IP address or host name (write e.g. 127.0.0.1)"
        ));
    }
    first_ipv4((bare, port)).map_err(|e| format!("cannot resolve `{host}`: {e}"))
}

fn first_ipv4<A: ToSocketAddrs>(a: A) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = a.to_socket_addrs().map_err(|e| e.to_string())?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| "it has no addresses".to_owned())
}

/// Parses an `outgoing` value: `host:port`, `[v6]:port`, or `name:port`
/// (resolved, first IPv4 address preferred).
fn parse_outgoing(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(a) = t.parse::<SocketAddr>() {
        return Ok(a);
    }
    let bad =
        || format!("`{s}` is not host:port (write e.g. 127.0.0.1:30000; port 0 = any free port)");
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.contains(':') {
        return Err(bad());
    }
    resolve_host_port(host, port)
}

/// Lower-cases and checks one `incoming` host name.
fn check_incoming(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("an `incoming` host name is empty".into());
    }
    if name.contains(char::is_whitespace) {
        return Err(format!(
            "`incoming` name `{name}` contains whitespace; give one host name per list item"
        ));
    }
    if name.contains('/') {
        return Err(format!(
            "`incoming` name `{name}` contains '/'; give a bare host name such as \
             example.com (no scheme or path)"
        ));
    }
    let is_v6_literal = name.starts_with('[') && name.ends_with(']');
    if name.contains(':') && !is_v6_literal {
        return Err(format!(
            "`incoming` name `{name}` has a ':' port suffix; give the host name without \
             the port (the port is ignored when matching the Host header)"
        ));
    }
    Ok(name.to_lowercase())
}

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

fn build(raw: RawTop, origin: &str) -> Result<Config, ConfigError> {
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
        for (key, present) in [
            ("service", lg.service.is_some()),
            ("host", lg.host.is_some()),
            ("port", lg.port.is_some()),
            ("key", lg.key.is_some()),
        ] {
            if present {
                note_legacy(
                    origin,
                    "logger: ",
                    key,
                    "Analogger logging is not supported",
                );
            }
        }
        if let Some(kind) = &lg.kind {
            let k = kind.trim().to_ascii_lowercase();
            if k != "stderror" && k != "stderr" {
                log::warn!(
                    "{origin}: logger type `{kind}` is not supported; only stderr logging \
                     is, so logging goes to stderr"
                );
            }
        }
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
        timeout: raw
            .timeout
            .map(|s| s.0)
            .unwrap_or(Duration::from_secs(DEFAULT_TIMEOUT_S)),
        health_check_uri,
        ssl,
        log_level,
        header_timeout: raw
            .header_timeout
            .map(|s| s.0)
            .unwrap_or(Duration::from_secs(DEFAULT_HEADER_TIMEOUT_S)),
        keepalive_timeout: raw
            .keepalive_timeout
            .map(|s| s.0)
            .unwrap_or(Duration::from_secs(DEFAULT_KEEPALIVE_TIMEOUT_S)),
        backend_timeout: raw
            .backend_timeout
            .map(|s| s.0)
            .unwrap_or(Duration::from_secs(DEFAULT_BACKEND_TIMEOUT_S)),
        handshake_timeout: raw
            .handshake_timeout
            .map(|s| s.0)
            .unwrap_or(Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_S)),
        max_header_bytes: max_header_bytes as usize,
        max_body_bytes: raw.max_body_bytes,
        sections,
    };
    cfg.check_cross().map_err(err)?;
    Ok(cfg)
}

impl Config {
    /// Checks rules that span several keys or sections. Returns the message
    /// (without the origin prefix).
    fn check_cross(&self) -> Result<(), String> {
        // Listeners.
        let listeners = self.client_addrs().map_err(|e| e.0)?;
        let mut seen: HashMap<SocketAddr, ()> = HashMap::new();
        for a in &listeners {
            if a.port() != 0 && seen.insert(*a, ()).is_some() {
                return Err(format!(
                    "client listener {a} is listed twice (cluster_address x cluster_port); \
                     remove the repeated address or port"
                ));
            }
        }
        let mut ats: Vec<SocketAddr> = Vec::new();
        for (i, s) in self.ssl.iter().enumerate() {
            let at = parse_outgoing(&s.at).map_err(|e| format!("ssl[{i}].at: {e}"))?;
            if !listeners.contains(&at) {
                let list: Vec<String> = listeners.iter().map(|a| a.to_string()).collect();
                return Err(format!(
                    "ssl[{i}].at `{}` is not one of the client listeners ({}); `at` must \
                     equal a cluster_address:cluster_port pair",
                    s.at,
                    list.join(", ")
                ));
            }
            if ats.contains(&at) {
                return Err(format!(
                    "ssl[{i}].at `{}` is given twice; each listener has one certificate",
                    s.at
                ));
            }
            ats.push(at);
        }

        let label = |i: usize| -> String {
            let s = &self.sections[i];
            match s.incoming.first() {
                Some(n) => format!("map[{i}] ({n})"),
                None => format!("map[{i}]"),
            }
        };

        // At most one default section.
        let defaults: Vec<usize> = (0..self.sections.len())
            .filter(|&i| self.sections[i].default)
            .collect();
        if defaults.len() > 1 {
            let names: Vec<String> = defaults.iter().map(|&i| label(i)).collect();
            return Err(format!(
                "{} all have `default: true`; only one section can be the default (it \
                 answers requests whose Host matches no section)",
                names.join(" and ")
            ));
        }

        // Each incoming name in one section, once.
        let mut owner: HashMap<&str, usize> = HashMap::new();
        for (i, s) in self.sections.iter().enumerate() {
            for name in &s.incoming {
                if let Some(&j) = owner.get(name.as_str()) {
                    return Err(if i == j {
                        format!(
                            "{}: `incoming` name `{name}` is listed twice; remove one",
                            label(i)
                        )
                    } else {
                        format!(
                            "`incoming` name `{name}` appears in {} and in {}; a host name can \
                             belong to only one section",
                            label(j),
                            label(i)
                        )
                    });
                }
                owner.insert(name, i);
            }
        }

        // Each outgoing address (non-zero port) once, and not a client
        // listener.
        let mut out_owner: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, s) in self.sections.iter().enumerate() {
            for a in &s.outgoing {
                if a.port() == 0 {
                    continue;
                }
                if let Some(&j) = out_owner.get(a) {
                    return Err(if i == j {
                        format!(
                            "{}: `outgoing` address {a} is listed twice; remove one",
                            label(i)
                        )
                    } else {
                        format!(
                            "`outgoing` address {a} is used by {} and by {}; each section \
                             needs its own address for its backends",
                            label(j),
                            label(i)
                        )
                    });
                }
                if listeners.contains(a) {
                    return Err(format!(
                        "{}: `outgoing` address {a} is also a client listener \
                         (cluster_address x cluster_port); use a different port",
                        label(i)
                    ));
                }
                out_owner.insert(*a, i);
            }
        }
        Ok(())
    }

    fn to_yaml_value(&self) -> Value {
        let mut m = Mapping::new();
        let s = |v: &str| Value::String(v.to_owned());
        let path = |p: &Path| Value::String(p.to_string_lossy().into_owned());
        let secs = |d: Duration| Value::Number((d.as_micros() as f64 / 1e6).into());
        let list = |v: &[String]| Value::Sequence(v.iter().map(|x| s(x)).collect());

        m.insert(s("cluster_address"), list(&self.cluster_address));
        m.insert(
            s("cluster_port"),
            Value::Sequence(self.cluster_port.iter().map(|p| Value::from(*p)).collect()),
        );
        m.insert(s("daemonize"), Value::Bool(self.daemonize));
        if let Some(p) = &self.pidfile {
            m.insert(s("pidfile"), path(p));
        }
        if let Some(u) = &self.user {
            m.insert(s("user"), s(u));
        }
        if let Some(g) = &self.group {
            m.insert(s("group"), s(g));
        }
        m.insert(s("timeout"), secs(self.timeout));
        m.insert(s("health_check_uri"), s(&self.health_check_uri));
        if !self.ssl.is_empty() {
            let v = self
                .ssl
                .iter()
                .map(|l| {
                    let mut e = Mapping::new();
                    e.insert(s("at"), s(&l.at));
                    e.insert(s("certfile"), path(&l.certfile));
                    e.insert(s("keyfile"), path(&l.keyfile));
                    Value::Mapping(e)
                })
                .collect();
            m.insert(s("ssl"), Value::Sequence(v));
        }
        let mut lg = Mapping::new();
        lg.insert(s("type"), s("stderror"));
        lg.insert(s("log_level"), Value::from(self.log_level));
        m.insert(s("logger"), Value::Mapping(lg));
        m.insert(s("header_timeout"), secs(self.header_timeout));
        m.insert(s("keepalive_timeout"), secs(self.keepalive_timeout));
        m.insert(s("backend_timeout"), secs(self.backend_timeout));
        m.insert(s("handshake_timeout"), secs(self.handshake_timeout));
        m.insert(
            s("max_header_bytes"),
            Value::from(self.max_header_bytes as u64),
        );
        if let Some(b) = self.max_body_bytes {
            m.insert(s("max_body_bytes"), Value::from(b));
        }
        let sections = self
            .sections
            .iter()
            .map(|sec| {
                let mut e = Mapping::new();
                e.insert(s("incoming"), list(&sec.incoming));
                if !sec.outgoing.is_empty() {
                    e.insert(
                        s("outgoing"),
                        Value::Sequence(sec.outgoing.iter().map(|a| s(&a.to_string())).collect()),
                    );
                }
                e.insert(s("default"), Value::Bool(sec.default));
                e.insert(s("key"), s(&sec.key));
                if let Some(p) = &sec.docroot {
                    e.insert(s("docroot"), path(p));
                }
                if let Some(p) = &sec.sendfileroot {
                    e.insert(s("sendfileroot"), path(p));
                }
                e.insert(
                    s("enable_sendfile_404"),
                    Value::Bool(sec.enable_sendfile_404),
                );
                e.insert(s("xforwardedfor"), Value::Bool(sec.xforwardedfor));
                e.insert(s("redeployable"), Value::Bool(sec.redeployable));
                e.insert(
                    s("redeployment_sizelimit"),
                    Value::from(sec.redeployment_sizelimit as u64),
                );
                if let Some(v) = &sec.staticmask {
                    e.insert(s("staticmask"), s(v));
                }
                if let Some(v) = &sec.cache_directory {
                    e.insert(s("cache_directory"), s(v));
                }
                e.insert(s("cache_extensions"), list(&sec.cache_extensions));
                Value::Mapping(e)
            })
            .collect();
        m.insert(s("map"), Value::Sequence(sections));
        Value::Mapping(m)
    }
}

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
        let raw = parse_raw(text, origin)?;
        build(raw, origin)
    }

    pub fn builtin_default() -> Config {
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
            sections: vec![SectionConfig {
                incoming: vec!["localhost".into()],
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

    /// Every client listener address: each `cluster_address` crossed with
    /// each `cluster_port`. An address may be an IPv4/IPv6 literal (IPv6 with
    /// or without brackets) or a host name, which is resolved (first IPv4
    /// address preferred).
    pub fn client_addrs(&self) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out = Vec::new();
        for a in &self.cluster_address {
            for p in &self.cluster_port {
                out.push(
                    resolve_host_port(a, *p)
                        .map_err(|e| ConfigError(format!("cluster_address `{a}`: {e}")))?,
                );
            }
        }
        Ok(out)
    }

    /// The normalized configuration as YAML, using the original key names
    /// (durations as float seconds). `from_yaml_str(&cfg.to_yaml(), ..)`
    /// gives back an equal `Config`.
    /// Fully validates a `Config` built or changed in code (for example
    /// after command-line overrides), with the same rules and messages as
    /// loading a file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        Config::from_yaml_str(&self.to_yaml(), "config").map(|_| ())
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(&self.to_yaml_value())
            .unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Config {
        match Config::from_yaml_str(text, "test.yml") {
            Ok(c) => c,
            Err(e) => panic!("config did not load: {e}"),
        }
    }

    fn load_err(text: &str) -> String {
        match Config::from_yaml_str(text, "test.yml") {
            Ok(c) => panic!("config loaded but should not have: {c:#?}"),
            Err(e) => {
                assert!(e.0.starts_with("test.yml: "), "no origin prefix: {e}");
                e.0
            }
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const MINIMAL: &str = "\
cluster_address: 127.0.0.1
cluster_port: 8080
map:
  - incoming: example.com
    outgoing: 127.0.0.1:30000
";

    /// The example of reference §1.5 (with its legacy keys).
    const CLASSIC: &str = r#"
cluster_address: [0.0.0.0]
cluster_port: [80, 443]
daemonize: true
pidfile: /var/run/swiftiply.pid          # W only
user: nobody
group: nogroup
epoll: true
epoll_descriptors: 8192
chunked_encoding_threshold: 16384
cache_threshold: 102400
health_check_uri: /swiftiply_health      # W only
ssl:
  - at: 0.0.0.0:443
    certfile: /etc/ssl/site.crt
    keyfile: /etc/ssl/site.key
logger: {type: stderror, log_level: 1}
defaults:
  redeployable: true
  redeployment_sizelimit: 16384
map:
  - incoming: [example.com, www.example.com]
    outgoing: 127.0.0.1:30000          # backends connect here
    default: true
    docroot: /srv/example/public
    sendfileroot: /srv/example/private
    enable_sendfile_404: true
    xforwardedfor: true
    key: s3cret
    staticmask: \.(rb|yml)$
    cache_directory: public
    cache_extensions: [html, htm]
    file_cache: {size: 500, window: 60}
  - incoming: api.example.com
    outgoing: [127.0.0.1:30010, 127.0.0.1:30011]
"#;

    #[test]
    fn classic_example_loads() {
        let c = load(CLASSIC);
        assert_eq!(c.cluster_address, vec!["0.0.0.0"]);
        assert_eq!(c.cluster_port, vec![80, 443]);
        assert!(c.daemonize);
        assert_eq!(c.pidfile, Some(PathBuf::from("/var/run/swiftiply.pid")));
        assert_eq!(c.user.as_deref(), Some("nobody"));
        assert_eq!(c.group.as_deref(), Some("nogroup"));
        assert_eq!(c.health_check_uri, "/swiftiply_health");
        assert_eq!(
            c.ssl,
            vec![SslListener {
                at: "0.0.0.0:443".into(),
                certfile: "/etc/ssl/site.crt".into(),
                keyfile: "/etc/ssl/site.key".into(),
            }]
        );
        assert_eq!(c.log_level, 1);
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.sections.len(), 2);
        let s0 = &c.sections[0];
        assert_eq!(s0.incoming, vec!["example.com", "www.example.com"]);
        assert_eq!(s0.outgoing, vec![sa("127.0.0.1:30000")]);
        assert!(s0.default && s0.enable_sendfile_404 && s0.xforwardedfor && s0.redeployable);
        assert_eq!(s0.key, "s3cret");
        assert_eq!(s0.docroot, Some(PathBuf::from("/srv/example/public")));
        assert_eq!(s0.sendfileroot, Some(PathBuf::from("/srv/example/private")));
        assert_eq!(s0.staticmask.as_deref(), Some(r"\.(rb|yml)$"));
        assert_eq!(s0.cache_directory.as_deref(), Some("public"));
        assert_eq!(s0.cache_extensions, vec!["html", "htm"]);
        let s1 = &c.sections[1];
        assert_eq!(s1.incoming, vec!["api.example.com"]);
        assert_eq!(
            s1.outgoing,
            vec![sa("127.0.0.1:30010"), sa("127.0.0.1:30011")]
        );
        assert!(!s1.default && s1.redeployable && !s1.xforwardedfor);
        assert_eq!(s1.key, "");
        assert_eq!(s1.redeployment_sizelimit, 16384);
        assert_eq!(s1.cache_extensions, vec!["html"]);
        assert_eq!(
            c.client_addrs().unwrap(),
            vec![sa("0.0.0.0:80"), sa("0.0.0.0:443")]
        );
    }

    #[test]
    fn minimal_defaults() {
        let c = load(MINIMAL);
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.header_timeout, Duration::from_secs(10));
        assert_eq!(c.keepalive_timeout, Duration::from_secs(30));
        assert_eq!(c.backend_timeout, Duration::from_secs(60));
        assert_eq!(c.handshake_timeout, Duration::from_secs(5));
        assert_eq!(c.max_header_bytes, 16384);
        assert_eq!(c.max_body_bytes, None);
        assert_eq!(c.log_level, 2);
        assert_eq!(c.health_check_uri, "/swiftiply_health");
        assert!(!c.daemonize && c.ssl.is_empty());
        let s = &c.sections[0];
        assert!(!s.default && !s.redeployable && !s.xforwardedfor && !s.enable_sendfile_404);
        assert_eq!(s.redeployment_sizelimit, 16384);
        assert_eq!(s.cache_extensions, vec!["html"]);
        assert_eq!(s.key, "");
    }

    #[test]
    fn example_yml_loads() {
        let c = load(include_str!("../config/example.yml"));
        assert_eq!(c.sections.len(), 3);
        assert_eq!(c.max_body_bytes, Some(104_857_600));
        assert!(c.sections[0].redeployable);
        assert!(!c.sections[1].redeployable, "own value must beat defaults");
        assert_eq!(c.sections[1].key, "1234");
        assert!(c.sections[2].outgoing.is_empty());
        assert_eq!(Config::from_yaml_str(&c.to_yaml(), "x").unwrap(), c);
    }

    #[test]
    fn minimal_yml_loads() {
        let c = load(include_str!("../config/minimal.yml"));
        assert!(c.sections[0].default);
    }

    #[test]
    fn string_or_list_forms() {
        let a = load(
            "cluster_address: 127.0.0.1\ncluster_port: 8080\nmap:\n  - incoming: a.com\n    outgoing: 127.0.0.1:1\n    cache_extensions: htm\n",
        );
        let b = load(
            "cluster_address: [127.0.0.1]\ncluster_port: [8080]\nmap:\n  - incoming: [a.com]\n    outgoing: [127.0.0.1:1]\n    cache_extensions: [htm]\n",
        );
        assert_eq!(a, b);
        let c = load(
            "cluster_address:\n  - 127.0.0.1\n  - 127.0.0.2\ncluster_port: [8080, '8081', 0]\nmap:\n  - incoming:\n      - A.Example.COM\n      - b.example.com\n    outgoing:\n      - 127.0.0.1:1\n      - 127.0.0.1:0\n      - 127.0.0.1:0\n",
        );
        assert_eq!(c.cluster_address, vec!["127.0.0.1", "127.0.0.2"]);
        assert_eq!(c.cluster_port, vec![8080, 8081, 0]);
        assert_eq!(
            c.sections[0].incoming,
            vec!["a.example.com", "b.example.com"]
        );
        assert_eq!(c.sections[0].outgoing.len(), 3);
        assert_eq!(c.client_addrs().unwrap().len(), 6);
    }

    #[test]
    fn defaults_merge_section_wins() {
        let c = load(
            "cluster_address: 127.0.0.1
cluster_port: 8080
defaults:
  key: dkey
  xforwardedfor: true
  redeployment_sizelimit: 1000
  cache_extensions: [htm]
  docroot: /srv/d
map:
  - incoming: a.com
    outgoing: 127.0.0.1:1
    key: own
    xforwardedfor: false
  - incoming: b.com
    outgoing: 127.0.0.1:2
    redeployment_sizelimit: 2000
",
        );
        let (a, b) = (&c.sections[0], &c.sections[1]);
        assert_eq!(a.key, "own");
        assert!(!a.xforwardedfor);
        assert_eq!(a.redeployment_sizelimit, 1000);
        assert_eq!(b.key, "dkey");
        assert!(b.xforwardedfor);
        assert_eq!(b.redeployment_sizelimit, 2000);
        assert_eq!(a.cache_extensions, vec!["htm"]);
        assert_eq!(b.docroot, Some(PathBuf::from("/srv/d")));
    }

    #[test]
    fn yaml_merge_keys_work() {
        let c = load(
            "cluster_address: 127.0.0.1
cluster_port: 8080
map:
  - &first
    incoming: a.com
    outgoing: 127.0.0.1:1
    redeployable: true
    key: shared
  - <<: *first
    incoming: b.com
    outgoing: 127.0.0.1:2
",
        );
        assert_eq!(c.sections[1].incoming, vec!["b.com"]);
        assert!(c.sections[1].redeployable);
        assert_eq!(c.sections[1].key, "shared");
    }

    #[test]
    fn booleans_accept_strings() {
        let c = load(
            "cluster_address: 127.0.0.1
cluster_port: 8080
daemonize: 'no'
map:
  - incoming: a.com
    outgoing: 127.0.0.1:1
    redeployable: 'true'
    xforwardedfor: yes
    enable_sendfile_404: On
    default: 'false'
",
        );
        assert!(!c.daemonize);
        let s = &c.sections[0];
        assert!(s.redeployable && s.xforwardedfor && s.enable_sendfile_404 && !s.default);
        let e =
            load_err(&MINIMAL.replace("example.com\n", "example.com\n    redeployable: maybe\n"));
        assert!(e.contains("maybe") && e.contains("line"), "{e}");
    }

    #[test]
    fn unknown_top_level_key() {
        let e = load_err(&format!("foo: 1\n{MINIMAL}"));
        assert!(e.contains("unknown key `foo`"), "{e}");
        assert!(e.contains("line 1 column 1"), "{e}");
        assert!(e.contains("expected one of"), "{e}");
        let e = load_err(&format!("{MINIMAL}bogus_key: 3\n"));
        assert!(e.contains("`bogus_key`") && e.contains("line 6"), "{e}");
        let e = load_err(&format!("{MINIMAL}incoming: x\n"));
        assert!(e.contains("section key"), "{e}");
    }

    #[test]
    fn unknown_section_key() {
        let e = load_err(&format!("{MINIMAL}    static_mask: foo\n"));
        assert!(e.contains("unknown key `static_mask`"), "{e}");
        assert!(e.contains("map[0]"), "{e}");
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("staticmask"), "{e}");
        let e = load_err(&format!("{MINIMAL}defaults:\n  nope: 1\n"));
        assert!(
            e.contains("defaults") && e.contains("`nope`") && e.contains("line 7"),
            "{e}"
        );
    }

    #[test]
    fn bad_types() {
        let e = load_err(&MINIMAL.replace("cluster_port: 8080", "cluster_port: {a: 1}"));
        assert!(e.contains("cluster_port") && e.contains("line 2"), "{e}");
        let e = load_err(&MINIMAL.replace("cluster_port: 8080", "cluster_port: 70000"));
        assert!(e.contains("70000") && e.contains("out of range"), "{e}");
        let e = load_err(&format!("{MINIMAL}timeout: soon\n"));
        assert!(e.contains("timeout") && e.contains("seconds"), "{e}");
        let e = load_err(&format!("{MINIMAL}max_header_bytes: -5\n"));
        assert!(e.contains("max_header_bytes"), "{e}");
        let e = load_err("- a\n- b\n");
        assert!(e.contains("mapping"), "{e}");
        let e = load_err(&MINIMAL.replace("outgoing: 127.0.0.1:30000", "outgoing: nowhere"));
        assert!(e.contains("outgoing") && e.contains("host:port"), "{e}");
    }

    #[test]
    fn duplicate_default() {
        let e = load_err(
            "cluster_address: 127.0.0.1
cluster_port: 8080
map:
  - incoming: a.com
    outgoing: 127.0.0.1:1
    default: true
  - incoming: b.com
    outgoing: 127.0.0.1:2
    default: true
",
        );
        assert!(
            e.contains("map[0] (a.com)") && e.contains("map[1] (b.com)"),
            "{e}"
        );
        assert!(e.contains("default"), "{e}");
    }

    #[test]
    fn duplicate_incoming() {
        let e = load_err(
            "cluster_address: 127.0.0.1
cluster_port: 8080
map:
  - incoming: a.com
    outgoing: 127.0.0.1:1
  - incoming: [b.com, A.com]
    outgoing: 127.0.0.1:2
",
        );
        assert!(
            e.contains("`a.com`") && e.contains("map[0]") && e.contains("map[1]"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_outgoing() {
        let e = load_err(
            "cluster_address: 127.0.0.1
cluster_port: 8080
map:
  - incoming: a.com
    outgoing: 127.0.0.1:1
  - incoming: b.com
    outgoing: 127.0.0.1:1
",
        );
        assert!(
            e.contains("127.0.0.1:1") && e.contains("map[1] (b.com)"),
            "{e}"
        );
        let e = load_err(&MINIMAL.replace("127.0.0.1:30000", "[127.0.0.1:5, 127.0.0.1:5]"));
        assert!(e.contains("listed twice"), "{e}");
        // Port 0 (any free port) may repeat.
        load(&MINIMAL.replace("127.0.0.1:30000", "[127.0.0.1:0, 127.0.0.1:0]"));
        // An outgoing address may not be a client listener.
        let e = load_err(&MINIMAL.replace("127.0.0.1:30000", "127.0.0.1:8080"));
        assert!(e.contains("client listener"), "{e}");
    }

    #[test]
    fn key_rules() {
        let long = "k".repeat(256);
        let e = load_err(&format!("{MINIMAL}    key: {long}\n"));
        assert!(
            e.contains("key") && e.contains("255") && e.contains("map[0]"),
            "{e}"
        );
        let ok = load(&format!("{MINIMAL}    key: {}\n", "k".repeat(255)));
        assert_eq!(ok.sections[0].key.len(), 255);
        let c = load(&format!("{MINIMAL}    key: 1234\n"));
        assert_eq!(c.sections[0].key, "1234");
        let c = load(&format!("{MINIMAL}    key: 0012\n"));
        assert_eq!(c.sections[0].key, "0012");
    }

    #[test]
    fn redeployment_sizelimit_too_large() {
        let e = load_err(&format!("{MINIMAL}    redeployment_sizelimit: 1048577\n"));
        assert!(
            e.contains("redeployment_sizelimit") && e.contains("1048576"),
            "{e}"
        );
        assert!(e.contains("buffer"), "{e}");
        let c = load(&format!("{MINIMAL}    redeployment_sizelimit: 1048576\n"));
        assert_eq!(c.sections[0].redeployment_sizelimit, 1_048_576);
    }

    #[test]
    fn required_keys() {
        let e = load_err(&MINIMAL.replace("cluster_port: 8080\n", ""));
        assert!(
            e.contains("cluster_port is required: the port(s) clients connect to"),
            "{e}"
        );
        let e = load_err(&MINIMAL.replace("cluster_address: 127.0.0.1\n", ""));
        assert!(e.contains("cluster_address is required"), "{e}");
        let e = load_err("cluster_address: 127.0.0.1\ncluster_port: 8080\n");
        assert!(e.contains("map: no sections"), "{e}");
        let e = load_err("cluster_address: 127.0.0.1\ncluster_port: 8080\nmap: []\n");
        assert!(e.contains("map: no sections"), "{e}");
        let e = load_err(&MINIMAL.replace("    outgoing: 127.0.0.1:30000\n", ""));
        assert!(
            e.contains("`outgoing` is missing") && e.contains("map[0] (example.com)"),
            "{e}"
        );
        let e =
            load_err(&MINIMAL.replace("  - incoming: example.com\n    outgoing", "  - outgoing"));
        assert!(e.contains("`incoming` is missing"), "{e}");
        // docroot makes outgoing optional.
        let c = load(&MINIMAL.replace("outgoing: 127.0.0.1:30000", "docroot: /srv/x"));
        assert!(c.sections[0].outgoing.is_empty());
    }

    #[test]
    fn empty_file() {
        let e = load_err("");
        assert!(e.contains("empty"), "{e}");
        let e = load_err("# only a comment\n\n");
        assert!(e.contains("empty"), "{e}");
        let e = load_err("---\n");
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn durations() {
        let c = load(&format!(
            "{MINIMAL}timeout: 2.5\nheader_timeout: 0.25\nkeepalive_timeout: 1\nbackend_timeout: 120\nhandshake_timeout: 0.001\n"
        ));
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.header_timeout, Duration::from_millis(250));
        assert_eq!(c.keepalive_timeout, Duration::from_secs(1));
        assert_eq!(c.backend_timeout, Duration::from_secs(120));
        assert_eq!(c.handshake_timeout, Duration::from_millis(1));
        for bad in ["0", "0.0", "-1", "-0.5", ".nan", ".inf", "1e12"] {
            let e = load_err(&format!("{MINIMAL}timeout: {bad}\n"));
            assert!(e.contains("timeout") && e.contains("line 6"), "{bad}: {e}");
        }
    }

    #[test]
    fn log_levels() {
        let lvl = |v: &str| {
            load(&format!(
                "{MINIMAL}logger: {{type: stderror, log_level: {v}}}\n"
            ))
            .log_level
        };
        assert_eq!(lvl("0"), 0);
        assert_eq!(lvl("3"), 3);
        assert_eq!(lvl("disabled"), 0);
        assert_eq!(lvl("minimal"), 1);
        assert_eq!(lvl("normal"), 2);
        assert_eq!(lvl("full"), 3);
        assert_eq!(lvl("Full"), 3);
        assert_eq!(lvl("'level 2'"), 2);
        assert_eq!(lvl("chatty"), 1);
        let e = load_err(&format!("{MINIMAL}logger: {{log_level: 7}}\n"));
        assert!(e.contains("log_level") && e.contains('7'), "{e}");
        // `level` is the classic alias.
        let c = load(&format!("{MINIMAL}logger: {{type: stderr, level: full}}\n"));
        assert_eq!(c.log_level, 3);
        // A logger without a level, or another type: default level.
        let c = load(&format!(
            "{MINIMAL}logger: {{type: Analogger, host: 127.0.0.1, port: 6766}}\n"
        ));
        assert_eq!(c.log_level, 2);
        // defaults.logger is used only when there is no top-level logger.
        let c = load(&format!("{MINIMAL}defaults:\n  logger: {{log_level: 0}}\n"));
        assert_eq!(c.log_level, 0);
        let c = load(&format!(
            "{MINIMAL}defaults:\n  logger: {{log_level: 0}}\nlogger: {{log_level: 3}}\n"
        ));
        assert_eq!(c.log_level, 3);
    }

    #[test]
    fn incoming_names_checked() {
        for bad in ["'a.com:80'", "'a b.com'", "http://a.com", "''"] {
            let e =
                load_err(&MINIMAL.replace("incoming: example.com", &format!("incoming: {bad}")));
            assert!(e.contains("incoming") && e.contains("map[0]"), "{bad}: {e}");
        }
        let c = load(&MINIMAL.replace("incoming: example.com", "incoming: '[::1]'"));
        assert_eq!(c.sections[0].incoming, vec!["[::1]"]);
    }

    #[test]
    fn outgoing_forms() {
        let c = load(&MINIMAL.replace("127.0.0.1:30000", "localhost:30001"));
        assert_eq!(c.sections[0].outgoing, vec![sa("127.0.0.1:30001")]);
        let c = load(&MINIMAL.replace("127.0.0.1:30000", "'[::1]:30002'"));
        assert_eq!(c.sections[0].outgoing, vec![sa("[::1]:30002")]);
    }

    #[test]
    fn legacy_section_keys() {
        let c = load(&format!(
            "{MINIMAL}    keepalive: true\n    proxy: keepalive\n    etag_cache: {{size: 1}}\n    dynamic_request_cache: {{}}\n    logger: {{type: stderror}}\n    url: ~\n"
        ));
        assert_eq!(c.sections.len(), 1);
        let e = load_err(&format!("{MINIMAL}    proxy: traditional\n"));
        assert!(
            e.contains("traditional") && e.contains("not supported"),
            "{e}"
        );
        let e = load_err(&format!("{MINIMAL}    keepalive: false\n"));
        assert!(e.contains("traditional") && e.contains("map[0]"), "{e}");
        let c = load(&format!(
            "{MINIMAL}backend_address: 127.0.0.1\nbackend_port: 3000\nkqueue: false\ndescriptors: 10\nupdates: {{updater: rest}}\n"
        ));
        assert_eq!(c.sections.len(), 1);
    }

    #[test]
    fn top_level_checks() {
        let e = load_err(&format!("{MINIMAL}health_check_uri: health\n"));
        assert!(e.contains("health_check_uri") && e.contains('/'), "{e}");
        for (v, ok) in [
            ("1023", false),
            ("1024", true),
            ("1048576", true),
            ("1048577", false),
        ] {
            let text = format!("{MINIMAL}max_header_bytes: {v}\n");
            match Config::from_yaml_str(&text, "t") {
                Ok(c) => assert!(ok && c.max_header_bytes == v.parse::<usize>().unwrap()),
                Err(e) => assert!(!ok && e.0.contains("max_header_bytes"), "{v}: {e}"),
            }
        }
        let c = load(&format!("{MINIMAL}max_body_bytes: 1000\n"));
        assert_eq!(c.max_body_bytes, Some(1000));
        let e = load_err(&format!(
            "{MINIMAL}ssl:\n  - at: 127.0.0.1:9443\n    certfile: a\n    keyfile: b\n"
        ));
        assert!(e.contains("ssl[0]") && e.contains("listener"), "{e}");
        let e = load_err(&format!(
            "{MINIMAL}ssl:\n  - at: 127.0.0.1:8080\n    certfile: a\n"
        ));
        assert!(e.contains("keyfile"), "{e}");
        let e = load_err(&MINIMAL.replace("cluster_port: 8080", "cluster_port: [8080, 8080]"));
        assert!(e.contains("twice"), "{e}");
        let e = load_err(&format!("{MINIMAL}timeout: 1\ntimeout: 2\n"));
        assert!(e.contains("timeout"), "{e}");
    }

    #[test]
    fn to_yaml_round_trips() {
        for text in [CLASSIC, MINIMAL, include_str!("../config/example.yml")] {
            let c = load(text);
            let y = c.to_yaml();
            let back = Config::from_yaml_str(&y, "x").unwrap_or_else(|e| panic!("{e}\n{y}"));
            assert_eq!(back, c, "{y}");
        }
        let c = load(&format!(
            "{MINIMAL}    key: '007'\ntimeout: 2.5\nheader_timeout: 0.1\nbackend_timeout: 0.000001\nmax_body_bytes: 0\n"
        ));
        let y = c.to_yaml();
        assert!(y.contains("timeout: 2.5"), "{y}");
        assert!(y.contains("cluster_port:"), "{y}");
        assert_eq!(Config::from_yaml_str(&y, "x").unwrap(), c, "{y}");
    }

    #[test]
    fn builtin_default_is_valid() {
        let d = Config::builtin_default();
        d.validate().unwrap();
        assert_eq!(Config::from_yaml_str(&d.to_yaml(), "builtin").unwrap(), d);
        // Its values are the documented defaults.
        let m = load(MINIMAL);
        assert_eq!(d.timeout, m.timeout);
        assert_eq!(d.header_timeout, m.header_timeout);
        assert_eq!(d.keepalive_timeout, m.keepalive_timeout);
        assert_eq!(d.backend_timeout, m.backend_timeout);
        assert_eq!(d.handshake_timeout, m.handshake_timeout);
        assert_eq!(d.max_header_bytes, m.max_header_bytes);
        assert_eq!(d.log_level, m.log_level);
        assert_eq!(d.health_check_uri, m.health_check_uri);
        assert_eq!(
            d.sections[0].redeployment_sizelimit,
            m.sections[0].redeployment_sizelimit
        );
        assert_eq!(
            d.sections[0].cache_extensions,
            m.sections[0].cache_extensions
        );
    }

    #[test]
    fn load_from_file() {
        let dir = std::env::temp_dir().join(format!("swiftiply-cfg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("s.yml");
        std::fs::write(&p, MINIMAL).unwrap();
        assert_eq!(Config::load(&p).unwrap(), load(MINIMAL));
        std::fs::write(&p, "cluster_address: 127.0.0.1\nwhat: 1\n").unwrap();
        let e = Config::load(&p).unwrap_err().0;
        assert!(
            e.starts_with(&p.display().to_string()) && e.contains("`what`"),
            "{e}"
        );
        let missing = dir.join("missing.yml");
        let e = Config::load(&missing).unwrap_err().0;
        assert!(
            e.contains("missing.yml") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
