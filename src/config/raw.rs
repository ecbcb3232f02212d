//! The config file as written: `Raw*` structs that serde_yaml fills in
//! directly, and the lenient readers for their scalar fields (a string or a
//! list, a boolean written as `'true'` or `yes`, seconds as an integer or a
//! float, a port, a key, a log level).
//!
//! Invariants: every struct is `deny_unknown_fields`, so a misspelt key is an
//! error that serde_yaml locates by line and column; every key is optional
//! here (`merge.rs` decides what is required); and each reader rejects a bad
//! value with a message that says what is expected. Legacy keys of the
//! classic program are fields too, so classic configs keep loading;
//! `legacy.rs` decides what to say about them.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;

use super::builtin::{MAX_DURATION_S, MAX_WORKERS};

/// The file as written. Every key is optional here; `merge::build` decides what is
/// required. Legacy keys are accepted so classic configs keep loading.
#[derive(Deserialize, Default)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of config keys (cluster_address, cluster_port, map, ...)"
)]
pub(super) struct RawTop {
    pub(super) cluster_address: Option<StrList>,
    pub(super) cluster_port: Option<PortList>,
    pub(super) daemonize: Option<Flag>,
    pub(super) pidfile: Option<PathBuf>,
    pub(super) user: Option<String>,
    pub(super) group: Option<String>,
    pub(super) timeout: Option<Secs>,
    pub(super) health_check_uri: Option<String>,
    pub(super) ssl: Option<Vec<RawSsl>>,
    pub(super) logger: Option<RawLogger>,
    pub(super) defaults: Option<RawSection>,
    pub(super) map: Option<Vec<RawSection>>,
    pub(super) header_timeout: Option<Secs>,
    pub(super) keepalive_timeout: Option<Secs>,
    pub(super) backend_timeout: Option<Secs>,
    pub(super) handshake_timeout: Option<Secs>,
    pub(super) max_header_bytes: Option<u64>,
    pub(super) max_body_bytes: Option<u64>,
    pub(super) request_buffer: Option<u64>,
    pub(super) request_spool_directory: Option<PathBuf>,
    pub(super) request_spool_limit: Option<u64>,
    pub(super) min_body_rate: Option<u64>,
    pub(super) min_body_rate_grace: Option<Secs>,
    pub(super) body_timeout: Option<Secs>,
    pub(super) max_connections: Option<u64>,
    pub(super) workers: Option<WorkerCount>,
    pub(super) cpu_affinity: Option<Flag>,
    pub(super) reuseport: Option<Flag>,
    pub(super) splice: Option<Flag>,
    pub(super) access_log: Option<String>,
    pub(super) status_uri: Option<String>,
    pub(super) shutdown_timeout: Option<Secs>,
    // Legacy keys: accepted, ignored with an info line.
    pub(super) epoll: Option<IgnoredAny>,
    pub(super) kqueue: Option<IgnoredAny>,
    pub(super) epoll_descriptors: Option<IgnoredAny>,
    pub(super) descriptors: Option<IgnoredAny>,
    pub(super) chunked_encoding_threshold: Option<IgnoredAny>,
    pub(super) cache_threshold: Option<IgnoredAny>,
    pub(super) backend_address: Option<IgnoredAny>,
    pub(super) backend_port: Option<IgnoredAny>,
    pub(super) updates: Option<IgnoredAny>,
}

/// One `map` entry (or `defaults`) as written.
#[derive(Deserialize, Default, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping of section keys (incoming, outgoing, default, ...)"
)]
pub(super) struct RawSection {
    pub(super) incoming: Option<StrList>,
    pub(super) outgoing: Option<StrList>,
    pub(super) default: Option<Flag>,
    pub(super) key: Option<KeyText>,
    pub(super) docroot: Option<PathBuf>,
    pub(super) sendfileroot: Option<PathBuf>,
    pub(super) enable_sendfile_404: Option<Flag>,
    pub(super) xforwardedfor: Option<Flag>,
    pub(super) redeployable: Option<Flag>,
    pub(super) redeployment_sizelimit: Option<u64>,
    pub(super) staticmask: Option<String>,
    pub(super) cache_directory: Option<String>,
    pub(super) cache_extensions: Option<StrList>,
    // Legacy keys: accepted, ignored with an info line (`proxy` and
    // `keepalive` are checked: the traditional mode is not supported).
    pub(super) keepalive: Option<Flag>,
    pub(super) file_cache: Option<IgnoredAny>,
    pub(super) etag_cache: Option<IgnoredAny>,
    pub(super) dynamic_request_cache: Option<IgnoredAny>,
    pub(super) logger: Option<RawLogger>,
    pub(super) proxy: Option<String>,
    pub(super) url: Option<IgnoredAny>,
}

#[derive(Deserialize, Clone)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `type` and `log_level` (or `level`)"
)]
pub(super) struct RawLogger {
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
    pub(super) log_level: Option<Level>,
    pub(super) level: Option<Level>,
    // Analogger parameters of the classic program: accepted, unused.
    pub(super) service: Option<IgnoredAny>,
    pub(super) host: Option<IgnoredAny>,
    pub(super) port: Option<IgnoredAny>,
    pub(super) key: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a mapping with `at`, `certfile` and `keyfile`"
)]
pub(super) struct RawSsl {
    pub(super) at: String,
    pub(super) certfile: PathBuf,
    pub(super) keyfile: PathBuf,
}

// Lenient scalar types. Each uses a visitor (not an untagged enum) so that
// serde_yaml can attach the line and column to its errors.

/// A string or a list of strings.
#[derive(Clone, Debug)]
pub(super) struct StrList(pub(super) Vec<String>);

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
pub(super) struct PortList(pub(super) Vec<u16>);

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

/// A number of workers: an integer 1..=`MAX_WORKERS` (or the same as a
/// string). Checked here, not in `merge.rs`, so that the error carries the
/// line and column.
#[derive(Clone, Copy, Debug)]
pub(super) struct WorkerCount(pub(super) usize);

impl<'de> Deserialize<'de> for WorkerCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = WorkerCount;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(
                    f,
                    "a number of workers from 1 to {MAX_WORKERS} (usually one per CPU core)"
                )
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<WorkerCount, E> {
                if v == 0 {
                    return Err(E::custom(
                        "0 workers would serve nothing; give at least 1 (one event loop \
                         per CPU core is the usual choice)",
                    ));
                }
                if v > MAX_WORKERS as u64 {
                    return Err(E::custom(format_args!(
                        "{v} workers is too many; the most allowed is {MAX_WORKERS} \
                         (one event loop per CPU core is the usual choice)"
                    )));
                }
                Ok(WorkerCount(v as usize))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WorkerCount, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<WorkerCount, E> {
                match v.trim().parse::<u64>() {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean: a YAML bool, or one of the strings true/false, yes/no, on/off,
/// y/n, 1/0 (any case), or the integers 1/0. Classic test configs write
/// `redeployable: 'true'`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Flag(pub(super) bool);

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
pub(super) struct Secs(pub(super) Duration);

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
pub(super) struct KeyText(pub(super) String);

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
pub(super) struct Level(pub(super) u8);

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
